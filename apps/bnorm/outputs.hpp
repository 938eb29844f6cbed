// outputs.hpp: the files `bnorm train` writes: metrics.csv and summary.json (both atomically).
#pragma once

#include <filesystem>
#include <string>

#include "bnorm/nn/trainer.hpp"

namespace bnorm::app {

// One row per evaluation: step, train_loss, train_accuracy, test_accuracy, test_loss, lr, seconds
// (and probe_p15, probe_p50, probe_p85 when the probe was on).
void write_metrics_csv(const std::filesystem::path& path, const nn::TrainResult& result);

// final_test_accuracy, final_train_loss, steps, seconds, steps_per_second, diverged, and the settings.
void write_summary_json(const std::filesystem::path& path, const nn::TrainConfig& config, const nn::TrainResult& result);

// The command line as typed, quoted where needed: for reports.
std::string command_line(int argc, char** argv);

}  // namespace bnorm::app
