// main.cpp: a consumer of the installed bnorm. Calls the C++ API (a BatchNorm module, forward and
// backward) and the C ABI (an inference forward and a bad call) once each and checks the results.
// Exits 0 on success, 1 with the reason on stderr.
#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "consumer_%s: FAIL: %s\n", BNORM_CONSUMER_VARIANT, what);
        ++failures;
    }
}

}  // namespace

int main() {
    check(std::strcmp(bnorm::version(), BNORM_PACKAGE_VERSION) == 0,
          "bnorm::version() differs from the version of the CMake package");
    check(std::strcmp(bnorm_version(), bnorm::version()) == 0, "bnorm_version() differs from bnorm::version()");

    // C++ API: n=4, c=2, spatial=3 through a BatchNorm module in training mode.
    const bnorm::Shape shape{.n = 4, .c = 2, .spatial = 3};
    std::vector<float> x(24), y(24), dy(24), dx(24);
    for (int i = 0; i < 24; ++i) {
        x[i] = static_cast<float>((i * 7) % 11) - 3.0f;
        dy[i] = static_cast<float>((i * 5) % 3) - 1.0f;
    }
    try {
        bnorm::BatchNorm<float> bn({.num_features = 2});
        bn.forward(shape, x, y);
        bn.backward(shape, x, dy, dx);
        check(bn.num_batches_tracked() == 1, "the module did not count the batch");
        for (int c = 0; c < 2; ++c) {
            double sum = 0.0, squares = 0.0;
            for (int n = 0; n < 4; ++n)
                for (int s = 0; s < 3; ++s) sum += y[(n * 2 + c) * 3 + s];
            const double mean = sum / 12.0;
            for (int n = 0; n < 4; ++n)
                for (int s = 0; s < 3; ++s) {
                    const double d = y[(n * 2 + c) * 3 + s] - mean;
                    squares += d * d;
                }
            check(std::abs(mean) < 1e-5, "C++ API: the batch mean of y is not ~0");
            check(std::abs(squares / 12.0 - 1.0) < 1e-3, "C++ API: the batch variance of y is not ~1");
        }
        for (float g : dx) check(std::isfinite(g), "C++ API: dx is not finite");
    } catch (const bnorm::Error& e) {
        std::fprintf(stderr, "consumer_%s: C++ API threw: %s\n", BNORM_CONSUMER_VARIANT, e.what());
        return 1;
    }

    // A bad C++ call throws InvalidArgument.
    bool threw = false;
    try {
        bnorm::BatchNorm<float> bad({.num_features = 0});
    } catch (const bnorm::InvalidArgument& e) {
        threw = e.status() == BNORM_EINVAL;
    }
    check(threw, "C++ API: num_features = 0 did not throw bnorm::InvalidArgument");

    // C ABI: inference with running mean 1 and variance 4, eps 0: y = (x - 1)/2.
    const bnorm_desc desc{BNORM_F32, BNORM_CHANNELS_FIRST, 4, 2, 3};
    const bnorm_options options{0.0, 0.1, 1};
    const float running_mean[2] = {1.0f, 1.0f}, running_var[2] = {4.0f, 4.0f};
    std::vector<float> z(24);
    const bnorm_status status =
        bnorm_forward_inference(&desc, &options, x.data(), nullptr, nullptr, running_mean, running_var, z.data());
    check(status == BNORM_OK, "C ABI: bnorm_forward_inference failed");
    for (int i = 0; i < 24; ++i) check(std::abs(z[i] - (x[i] - 1.0f) / 2.0f) < 1e-6f, "C ABI: wrong y");
    check(bnorm_forward_inference(nullptr, &options, x.data(), nullptr, nullptr, running_mean, running_var,
                                  z.data()) == BNORM_EINVAL,
          "C ABI: desc NULL did not return BNORM_EINVAL");
    check(bnorm_last_error()[0] != '\0', "C ABI: no message after a failing call");

    if (failures) return 1;
    std::printf("consumer_%s: OK (bnorm %s)\n", BNORM_CONSUMER_VARIANT, bnorm::version());
    return 0;
}
