#include "outputs.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>

#include "bnorm/nn/atomic_file.hpp"

namespace bnorm::app {
namespace {

void write_text(const std::filesystem::path& path, const std::string& text) {
    nn::write_file_atomically(path, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

std::string number(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.9g", v);
    return buffer;
}

}  // namespace

void write_metrics_csv(const std::filesystem::path& path, const nn::TrainResult& result) {
    const bool probe = result.history.size() > 1 &&
                       (result.history.back().probe_p15 != 0 || result.history.back().probe_p85 != 0);
    std::string csv = "step,train_loss,train_accuracy,test_accuracy,test_loss,lr,seconds";
    csv += probe ? ",probe_p15,probe_p50,probe_p85\n" : "\n";
    for (const nn::EvalPoint& p : result.history) {
        csv += std::to_string(p.step) + "," + number(p.train_loss) + "," + number(p.train_accuracy) + "," +
               number(p.test_accuracy) + "," + number(p.test_loss) + "," + number(p.lr) + "," + number(p.seconds);
        if (probe) csv += "," + number(p.probe_p15) + "," + number(p.probe_p50) + "," + number(p.probe_p85);
        csv += "\n";
    }
    write_text(path, csv);
}

void write_summary_json(const std::filesystem::path& path, const nn::TrainConfig& config, const nn::TrainResult& result) {
    nlohmann::json j;
    const nn::EvalPoint& last = result.last();
    j["final_test_accuracy"] = last.test_accuracy;
    j["final_test_loss"] = last.test_loss;
    j["final_train_accuracy"] = last.train_accuracy;
    j["final_train_loss"] = last.train_loss;
    j["steps"] = result.steps;
    j["seconds"] = result.seconds;
    j["steps_per_second"] = result.steps_per_second();
    j["wall_seconds"] = result.wall_seconds;
    j["test_inference_ms"] = last.test_seconds * 1e3;
    j["diverged"] = result.diverged;
    j["settings"] = nn::config_to_metadata(config);
    if (result.processes > 1) {
        j["distributed"] = {{"processes", result.processes},
                            {"sync_bn", config.sync_bn},
                            {"split", config.split},
                            {"parameter_hash", result.parameter_hash},
                            {"parameters_identical_on_all_processes", result.parameters_identical},
                            {"gradient_allreduce_seconds", result.gradient_allreduce_seconds},
                            {"bn_communication_seconds", result.bn_communication_seconds}};
    }
    write_text(path, j.dump(2) + "\n");
}

std::string command_line(int argc, char** argv) {
    std::string out;
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        const bool plain = !a.empty() && a.find_first_of(" \t\"'$\\") == std::string::npos;
        if (i) out += " ";
        out += plain ? a : "'" + a + "'";
    }
    return out;
}

}  // namespace bnorm::app
