// demo.hpp: `bnorm demo`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>

namespace bnorm::app {

struct DemoSettings {
    int64_t n = 8, c = 3, spatial = 16;
    bool channels_last = false;
    unsigned seed = 1;
};

void add_demo_options(CLI::App* demo, DemoSettings& settings);
int run_demo(const DemoSettings& settings);  // returns the exit code

}  // namespace bnorm::app
