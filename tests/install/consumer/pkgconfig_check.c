/* pkgconfig_check.c: a C program built with only `cc $(pkg-config --cflags --libs bnorm)`. Runs a
 * training forward through the C ABI and checks the batch mean of y is ~0, then a bad call.
 * Prints "bnorm_version=<version>" for run_install_test.cmake to compare with pkg-config's.
 * Exits 0 on success, 1 with the reason on stderr. */
#include <bnorm/bnorm.h>

#include <stdio.h>

int main(void) {
    const bnorm_desc desc = {BNORM_F32, BNORM_CHANNELS_LAST, 3, 2, 2}; /* (n, spatial, c) */
    const bnorm_options options = {1e-5, 0.1, 0};
    float x[12], y[12];
    double mean[2] = {0.0, 0.0};
    int i;
    for (i = 0; i < 12; ++i) x[i] = (float)((i * 5) % 7) + (float)(i % 2) * 10.0f;
    if (bnorm_forward_training(&desc, &options, x, NULL, NULL, NULL, NULL, NULL, y, NULL, NULL) != BNORM_OK) {
        fprintf(stderr, "pkgconfig_check: bnorm_forward_training failed: %s\n", bnorm_last_error());
        return 1;
    }
    for (i = 0; i < 12; ++i) mean[i % 2] += y[i] / 6.0;
    for (i = 0; i < 2; ++i)
        if (!(mean[i] < 1e-5 && mean[i] > -1e-5)) {
            fprintf(stderr, "pkgconfig_check: channel %d: batch mean of y = %g, want ~0\n", i, mean[i]);
            return 1;
        }
    if (bnorm_forward_training(&desc, NULL, x, NULL, NULL, NULL, NULL, NULL, y, NULL, NULL) != BNORM_EINVAL ||
        bnorm_last_error()[0] == '\0') {
        fprintf(stderr, "pkgconfig_check: options NULL was not BNORM_EINVAL with a message\n");
        return 1;
    }
    printf("bnorm_version=%s\n", bnorm_version());
    return 0;
}
