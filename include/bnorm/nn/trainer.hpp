// trainer.hpp: one training run of a model on Fashion-MNIST: the loop, evaluation, probes,
// checkpoints and resume. The `bnorm` command and the experiments drive it; it never prints
// (progress goes through a callback).
//
//   bnorm::nn::TrainConfig config;            // the paper's MLP with BN, SGD, batch 60
//   config.steps = 2000;
//   bnorm::nn::Trainer trainer(config);
//   bnorm::nn::TrainResult result = trainer.run([](const bnorm::nn::TrainProgress& p) { ... });
//   trainer.save(config.out_dir / "model.safetensors");
#pragma once

#include <cstdint>
#include <filesystem>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bnorm/dist.hpp"
#include "bnorm/nn/data.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

class Optimizer;

struct TrainConfig {
    std::string model = "mlp";           // "mlp" (the paper's 3x100 sigmoid network) or "cnn"
    bool batch_norm = true;
    bool channels_last = false;          // cnn only: the memory order of the activations
    std::string init = "gaussian";       // mlp: "gaussian" (N(0, 0.1^2), the paper's), "he", "xavier"
    double dropout = 0.0;                // mlp: dropout probability after each hidden sigmoid
    std::string optimizer = "sgd";       // "sgd" or "adam"
    double lr = 0.5;
    std::optional<double> momentum;      // sgd: none means plain SGD
    double weight_decay = 0.0;
    std::string schedule = "constant";   // "constant", "step" (x0.1 at 50% and 75%), "cosine"
    int64_t batch = 60;
    int64_t steps = 0;                   // total steps; 0: use epochs
    int64_t epochs = 0;
    uint64_t seed = 1;
    int64_t eval_every = 500;            // steps between evaluations (and at the end)
    int64_t eval_examples = 10000;       // test images per evaluation (and train images for train accuracy)
    std::filesystem::path data_dir = default_fashion_mnist_dir();
    std::optional<int64_t> stop_after;   // stop (as if interrupted) after this many steps, keeping the schedule
    int64_t checkpoint_every = 0;        // steps between checkpoints to checkpoint_path; 0: none
    std::filesystem::path checkpoint_path;
    bool probe = false;                  // record the 15/50/85th percentiles of one last-hidden-layer sigmoid input
    // OpenBLAS threads for the evaluation passes only (0: leave the current setting): their
    // matrix products (500 images at a time) split well over threads, a training step's (batch 60)
    // do not; the previous setting is restored after each evaluation.
    int eval_blas_threads = 0;
    // Called every inspect_every steps (0: never) with the step's batch, before the step trains on
    // it: for measurements that must leave the network as they found it (analysis.hpp).
    int64_t inspect_every = 0;
    std::function<void(int64_t step, Sequential& model, const Tensor& images, std::span<const int32_t> labels)> inspect;
    // Data parallelism (docs/distributed.md): every process of comm runs the same Trainer; each
    // global batch of `batch` samples is split across them (`split`: "even", or "skewed": shares
    // proportional to rank + 1, and every third step the last process gets none), gradients are
    // summed with comm's allreduce in buckets of bucket_elements floats, and only rank 0 evaluates
    // and writes checkpoints. sync_bn: batch normalization with the whole batch's statistics;
    // without it each process normalizes with its own share ("ghost batches"). null: one process.
    Communicator* comm = nullptr;
    bool sync_bn = false;
    std::string split = "even";
    int64_t bucket_elements = int64_t{1} << 18;
};

struct EvalPoint {
    int64_t step;
    double train_loss;      // mean loss of the training batches since the previous evaluation
    double train_accuracy;  // on eval_examples training images, evaluation mode
    double test_accuracy;   // on eval_examples test images, evaluation mode
    double test_loss;
    double lr;
    double seconds;         // training time so far (evaluation excluded)
    double probe_p15 = 0, probe_p50 = 0, probe_p85 = 0;  // when probe is on
    double test_seconds = 0;  // wall time of the test-set pass (inference only); not saved in checkpoints
};

struct TrainResult {
    std::vector<EvalPoint> history;
    int64_t steps = 0;
    double seconds = 0;
    double wall_seconds = 0;  // this run() call from start to end, evaluations included
    bool diverged = false;  // the loss became NaN or infinite; training stopped there
    const EvalPoint& last() const { return history.back(); }
    double steps_per_second() const { return seconds > 0 ? static_cast<double>(steps) / seconds : 0; }
    // Distributed runs (TrainConfig::comm): processes, the time in the gradient allreduce and in
    // the batch-normalization collectives (part of `seconds`), and a hash of the parameters (and,
    // with sync_bn, the buffers), checked equal on every process.
    int processes = 1;
    double gradient_allreduce_seconds = 0;
    double bn_communication_seconds = 0;
    std::string parameter_hash;
    bool parameters_identical = true;
};

struct TrainProgress {
    int64_t step, total_steps;
    double loss;       // recent training loss
    double accuracy;   // recent training batch accuracy
};

class Trainer {
public:
    explicit Trainer(TrainConfig config);  // validates the config, loads the data, builds the model
    ~Trainer();

    // Resumes from a checkpoint written by save() or by checkpoint_every: model, optimizer, data
    // position, random states, history. The config must describe the same model.
    void resume(const std::filesystem::path& checkpoint);

    TrainResult run(const std::function<void(const TrainProgress&)>& on_progress = {});

    void save(const std::filesystem::path& path);  // atomic
    EvalPoint evaluate_now() { return evaluate(step_, std::nan(""), seconds_); }
    const TrainConfig& config() const { return config_; }
    int64_t total_steps() const { return total_steps_; }
    Sequential& model() { return *model_; }

private:
    EvalPoint evaluate(int64_t step, double train_loss, double seconds);
    std::map<std::string, std::string> metadata() const;
    // Data parallelism (TrainConfig::comm); all no-ops in one process.
    bool distributed() const { return config_.comm && config_.comm->size() > 1; }
    bool writes() const { return !config_.comm || config_.comm->rank() == 0; }
    EvalPoint evaluate_on_rank0(int64_t step, double train_loss, double seconds);
    void setup_distributed();
    void take_share(const Tensor& images, std::span<const int32_t> labels);
    void allreduce_gradients();
    void finish_distributed(TrainResult& result);

    TrainConfig config_;
    Dataset train_, test_;
    std::unique_ptr<Sequential> model_;
    std::unique_ptr<Optimizer> optimizer_;
    std::unique_ptr<BatchLoader> loader_;
    int64_t total_steps_ = 0;
    int64_t step_ = 0;
    double seconds_ = 0;
    double loss_sum_ = 0;     // training loss since the last evaluation, for its mean
    int64_t loss_count_ = 0;
    std::vector<EvalPoint> history_;
    size_t probe_layer_ = 0;  // the layer whose output is the probed sigmoid's input
    Tensor share_images_;     // this process's share of the batch (distributed runs)
    std::vector<int32_t> share_labels_;
    std::vector<float> bucket_;
    double gradient_seconds_ = 0;
};

// The training settings a checkpoint written by Trainer::save was made with (its metadata).
TrainConfig read_checkpoint_config(const std::filesystem::path& checkpoint);

// Test accuracy and loss of a checkpoint written by Trainer::save, rebuilt from its metadata.
// eval_blas_threads as in TrainConfig.
EvalPoint evaluate_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& data_dir,
                              int eval_blas_threads = 0);

// Reads a TrainConfig from / writes it to the flat string map a checkpoint's metadata holds.
std::map<std::string, std::string> config_to_metadata(const TrainConfig& config);
TrainConfig config_from_metadata(const std::map<std::string, std::string>& metadata);

}  // namespace bnorm::nn
