// experiments.hpp: `bnorm experiment NAME`: trains the runs an experiment needs (each into its own
// folder with metrics.csv and summary.json), then writes DIR/report.html with figures and tables.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/dist.hpp"
#include "bnorm/nn/data.hpp"

namespace bnorm::app {

struct ExperimentOptions {
    std::string name;
    std::filesystem::path out;             // default runs/NAME
    int seeds = 3;
    std::optional<int64_t> steps;          // default: each experiment's own
    std::filesystem::path data_dir = nn::default_fashion_mnist_dir();
    std::string command;                   // the command line, for the report
    // Under mpirun: every run is data parallel over comm (TrainConfig::comm), with synchronized
    // batch normalization when sync_bn; only rank 0 prints and writes. covariate-shift refuses.
    Communicator* comm = nullptr;
    bool sync_bn = false;
};

std::vector<std::string> experiment_names();  // including "all"
int run_experiment(const ExperimentOptions& options);  // returns the exit code

}  // namespace bnorm::app
