/* test_c_header.c: the C ABI seen from a C99 program. Proves that <bnorm/bnorm.h> compiles as
 * C99 with -Wall -Wextra -Wpedantic -Werror, that libbnorm.so links into a C program, and that a
 * training forward + backward on a small float32 tensor (n=4, c=2, spatial=3, channels-first)
 * normalizes each channel to batch mean ~0 and biased variance ~1, with finite gradients whose
 * per-channel sum is ~0 (a property of batch-norm's input gradient); and that a bad call returns
 * BNORM_EINVAL with a non-empty message and leaves the output alone.
 * Exits 0 on success, 1 with the reason on stderr otherwise. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define N 4
#define C 2
#define S 3
#define NUMEL (N * C * S)

static int failures = 0;

/* No libm: the target links only libbnorm. */
static double absd(double v) { return v < 0.0 ? -v : v; }

static void fail(const char* what) {
    fprintf(stderr, "test_c_header: FAIL: %s\n", what);
    ++failures;
}

int main(void) {
    const bnorm_desc desc = {BNORM_F32, BNORM_CHANNELS_FIRST, N, C, S};
    const bnorm_options options = {1e-5, 0.1, 1};
    float x[NUMEL], y[NUMEL], dy[NUMEL], dx[NUMEL];
    float weight[C] = {1.0f, 1.0f}, bias[C] = {0.0f, 0.0f};
    float running_mean[C] = {0.0f, 0.0f}, running_var[C] = {1.0f, 1.0f};
    float save_mean[C], save_invstd[C], dweight[C], dbias[C];
    int64_t count = 0;
    int i, n, c, s;
    bnorm_status status;
    const char* message;

    for (i = 0; i < NUMEL; ++i) {
        x[i] = (float)(i % 7) * 0.75f + (float)(i / 5) - 2.0f; /* varied, not constant per channel */
        dy[i] = (float)((i * 3) % 5) - 2.0f + 0.1f * (float)i;
        y[i] = dx[i] = -999.0f;
    }

    status = bnorm_forward_training(&desc, &options, x, weight, bias, running_mean, running_var, &count, y,
                                    save_mean, save_invstd);
    if (status != BNORM_OK) {
        fprintf(stderr, "test_c_header: bnorm_forward_training returned %d: %s\n", (int)status, bnorm_last_error());
        return 1;
    }
    if (count != 1) fail("num_batches_tracked was not incremented to 1");

    for (c = 0; c < C; ++c) {
        double sum = 0.0, squares = 0.0, mean, var;
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) sum += y[(n * C + c) * S + s];
        mean = sum / (N * S);
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) {
                const double d = y[(n * C + c) * S + s] - mean;
                squares += d * d;
            }
        var = squares / (N * S);
        if (!(absd(mean) < 1e-5)) {
            fprintf(stderr, "test_c_header: channel %d: batch mean of y = %g, want ~0\n", c, mean);
            ++failures;
        }
        /* eps = 1e-5 shrinks the variance by var/(var + eps): allow for it. */
        if (!(absd(var - 1.0) < 1e-3)) {
            fprintf(stderr, "test_c_header: channel %d: batch variance of y = %g, want ~1\n", c, var);
            ++failures;
        }
        if (!(save_invstd[c] > 0.0f) || !isfinite(save_mean[c])) fail("save_mean/save_invstd not written");
    }

    status = bnorm_backward(&desc, dy, x, weight, save_mean, save_invstd, dx, dweight, dbias);
    if (status != BNORM_OK) {
        fprintf(stderr, "test_c_header: bnorm_backward returned %d: %s\n", (int)status, bnorm_last_error());
        return 1;
    }
    for (c = 0; c < C; ++c) {
        double sum_dx = 0.0, sum_dy = 0.0, scale = 0.0;
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) {
                const int k = (n * C + c) * S + s;
                if (!isfinite(dx[k])) fail("dx is not finite");
                sum_dx += dx[k];
                sum_dy += dy[k];
                scale += absd(dx[k]);
            }
        if (!(scale > 0.0)) fail("dx is all zero");
        if (!(absd(sum_dx) < 1e-4 * (1.0 + scale))) {
            fprintf(stderr, "test_c_header: channel %d: sum of dx = %g, want ~0\n", c, sum_dx);
            ++failures;
        }
        if (!(absd(dbias[c] - sum_dy) < 1e-4 * (1.0 + absd(sum_dy)))) {
            fprintf(stderr, "test_c_header: channel %d: dbias = %g, want sum of dy = %g\n", c, dbias[c], sum_dy);
            ++failures;
        }
    }

    /* A bad call: c = 0. */
    {
        const bnorm_desc bad = {BNORM_F32, BNORM_CHANNELS_FIRST, N, 0, S};
        float y_before[NUMEL];
        memcpy(y_before, y, sizeof y);
        status = bnorm_forward_inference(&bad, &options, x, weight, bias, running_mean, running_var, y);
        message = bnorm_last_error();
        if (status != BNORM_EINVAL) {
            fprintf(stderr, "test_c_header: a bad call returned %d, want BNORM_EINVAL (%d)\n", (int)status,
                    (int)BNORM_EINVAL);
            ++failures;
        }
        if (message == NULL || message[0] == '\0') fail("a bad call left bnorm_last_error() empty");
        else if (strstr(message, "desc->c") == NULL) {
            fprintf(stderr, "test_c_header: the message does not name desc->c: \"%s\"\n", message);
            ++failures;
        }
        if (memcmp(y_before, y, sizeof y) != 0) fail("a bad call wrote to y");
    }

    if (bnorm_version() == NULL || bnorm_version()[0] == '\0') fail("bnorm_version() is empty");

    if (failures) {
        fprintf(stderr, "test_c_header: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_c_header: OK (bnorm %s)\n", bnorm_version());
    return 0;
}
