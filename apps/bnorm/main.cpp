// The bnorm command: parses (CLI11), calls the training system, reports progress, writes results.
// It holds no maths.
//   bnorm train      one training run -> DIR/metrics.csv, DIR/summary.json, DIR/model.safetensors
//   bnorm eval       test accuracy and loss of a checkpoint
//   bnorm experiment one experiment (or all) end to end -> DIR/report.html
//   bnorm demo       one forward and backward pass of a BatchNorm module, explained
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cblas.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "bnorm/bnorm.hpp"
#include "bnorm/nn/trainer.hpp"
#ifdef BNORM_HAVE_MPI
#include "bnorm/mpi.hpp"
#endif
#include "demo.hpp"
#include "experiments.hpp"
#include "outputs.hpp"
#include "progress.hpp"

namespace {

namespace fs = std::filesystem;
using bnorm::nn::TrainConfig;

// One thread count for both engines: libbnorm's kernels and OpenBLAS's matrix products. Without
// --threads (and without BNORM_NUM_THREADS), the mlp trains on one thread: its matrices (60 x 784 x
// 100) are too small to split, and two thread pools (OpenMP's and OpenBLAS's) spinning on two cores
// made its training 1.4x and its inference 4.8x slower (docs/performance.md); its evaluations'
// larger products (500 images at a time) then use OpenBLAS on every core. The cnn uses the cores.
// Returns the OpenBLAS threads for evaluations (0: the same as training).
int set_threads(int threads, const std::string& model) {
    int eval_blas_threads = 0;
    if (threads <= 0 && model == "mlp" && !std::getenv("BNORM_NUM_THREADS")) {
        threads = 1;
        eval_blas_threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    }
    if (threads <= 0) return 0;
    bnorm::set_num_threads(threads);
    openblas_set_num_threads(threads);
    return eval_blas_threads;
}

void add_train_options(CLI::App* cmd, TrainConfig& c, int& threads) {
    cmd->add_option("--model", c.model, "mlp (the paper's 784-100-100-100-10 sigmoid network) or cnn")
        ->check(CLI::IsMember({"mlp", "cnn"}))->capture_default_str();
    cmd->add_flag("--bn,!--no-bn", c.batch_norm, "with batch normalization (default) or without")->capture_default_str();
    cmd->add_flag("--sync-bn", c.sync_bn,
                  "under mpirun: batch normalization with the statistics of the whole batch (default: each "
                  "process's share, 'ghost batches'; docs/distributed.md)");
    cmd->add_option("--split", c.split, "under mpirun: how a batch is split: even, or skewed (uneven; every third step "
                                        "the last process gets none; needs --sync-bn)")
        ->check(CLI::IsMember({"even", "skewed"}))->capture_default_str();
    cmd->add_option("--optimizer", c.optimizer, "sgd or adam")->check(CLI::IsMember({"sgd", "adam"}))->capture_default_str();
    cmd->add_option("--lr", c.lr, "learning rate")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--momentum", c.momentum, "SGD momentum (default: none, plain SGD)")->check(CLI::Range(0.0, 0.999999));
    cmd->add_option("--weight-decay", c.weight_decay, "L2 weight decay")->check(CLI::NonNegativeNumber)->capture_default_str();
    cmd->add_option("--schedule", c.schedule, "learning-rate schedule: constant, step (x0.1 at 50% and 75%) or cosine")
        ->check(CLI::IsMember({"constant", "step", "cosine"}))->capture_default_str();
    cmd->add_option("--batch", c.batch, "mini-batch size")->check(CLI::Range(int64_t{2}, int64_t{60000}))->capture_default_str();
    auto* steps = cmd->add_option("--steps", c.steps, "training steps")->check(CLI::Range(int64_t{1}, int64_t{100000000}));
    auto* epochs = cmd->add_option("--epochs", c.epochs, "training epochs (instead of --steps)")
                       ->check(CLI::Range(int64_t{1}, int64_t{100000}));
    steps->excludes(epochs);
    cmd->add_option("--seed", c.seed, "random seed (initialization, shuffling, dropout)")->capture_default_str();
    cmd->add_option("--init", c.init, "mlp initialization: gaussian (N(0, 0.1^2), the paper's), he or xavier")
        ->check(CLI::IsMember({"gaussian", "he", "xavier"}))->capture_default_str();
    cmd->add_option("--dropout", c.dropout, "mlp: dropout probability after each hidden layer")
        ->check(CLI::Range(0.0, 0.95))->capture_default_str();
    cmd->add_flag("--channels-last", c.channels_last, "cnn: keep activations channels-last (NHWC)");
    cmd->add_option("--eval-every", c.eval_every, "steps between evaluations")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--data", c.data_dir, "Fashion-MNIST directory (IDX files, gzipped or not)")->capture_default_str();
    cmd->add_option("--threads", threads, "threads (default: BNORM_NUM_THREADS, else for the mlp 1, its evaluations on the cores, for the cnn the cores)")->check(CLI::Range(1, 4096));
}

bool is_rank0(const TrainConfig& c) { return !c.comm || c.comm->rank() == 0; }

// Under mpirun every process trains; only rank 0 prints progress and writes files.
int train(TrainConfig config, const fs::path& out, const std::optional<fs::path>& resume) {
    const bool rank0 = is_rank0(config);
    if (rank0) fs::create_directories(out);
    config.checkpoint_path = out / "checkpoint.safetensors";
    bnorm::nn::Trainer trainer(config);
    if (resume) trainer.resume(*resume);
    std::optional<bnorm::app::Progress> progress;
    if (rank0) progress.emplace("train " + config.model + (config.batch_norm ? "+bn" : ""), trainer.total_steps());
    const bnorm::nn::TrainResult result = trainer.run([&](const bnorm::nn::TrainProgress& p) {
        if (progress) progress->update(p.step, {{"loss", p.loss}, {"acc", p.accuracy}});
    });
    if (!rank0) return 0;
    if (!result.parameters_identical)
        throw std::runtime_error("the processes ended with different parameters (hash " + result.parameter_hash +
                                 " on rank 0); this is a bug, please report it");
    trainer.save(out / "model.safetensors");
    bnorm::app::write_metrics_csv(out / "metrics.csv", result);
    bnorm::app::write_summary_json(out / "summary.json", trainer.config(), result);
    const auto& last = result.last();
    progress->finish(std::string(result.diverged ? "DIVERGED (loss not finite); " : "") + "test accuracy " +
                    std::to_string(last.test_accuracy) + ", " + std::to_string(static_cast<long long>(result.steps_per_second())) +
                    " steps/s; wrote " + (out / "metrics.csv").string() + ", summary.json, model.safetensors");
    return 0;
}

int eval(const fs::path& checkpoint, const fs::path& data, int eval_blas_threads) {
    const bnorm::nn::EvalPoint p = bnorm::nn::evaluate_checkpoint(checkpoint, data, eval_blas_threads);
    std::printf("%s: test accuracy %.4f, test loss %.4f (step %lld); inference on the 10000 test images %.1f ms\n",
                checkpoint.string().c_str(), p.test_accuracy, p.test_loss, static_cast<long long>(p.step),
                p.test_seconds * 1e3);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Under mpirun: MPI, and a communicator for the training system (single process otherwise).
#ifdef BNORM_HAVE_MPI
    std::optional<bnorm::MpiSession> mpi_session;
    std::unique_ptr<bnorm::MpiCommunicator> world;
    if (bnorm::MpiSession::launched_by_mpirun()) {
        mpi_session.emplace(&argc, &argv);
        world = std::make_unique<bnorm::MpiCommunicator>();
    }
    bnorm::Communicator* comm = world && world->size() > 1 ? world.get() : nullptr;
#else
    bnorm::Communicator* comm = nullptr;
    if (std::getenv("OMPI_COMM_WORLD_SIZE") && std::string(std::getenv("OMPI_COMM_WORLD_SIZE")) != "1") {
        std::fprintf(stderr, "bnorm: this bnorm was built without MPI; install libopenmpi-dev and rebuild to train under mpirun\n");
        return 1;
    }
#endif
    CLI::App app{"bnorm: batch normalization for deep neural networks, and the experiments that test its claims"};
    app.set_version_flag("--version", std::string("bnorm ") + bnorm::version());
    app.require_subcommand(1);

    TrainConfig config;
    config.steps = 0;
    int threads = 0;
    fs::path out = "runs/train";
    std::optional<fs::path> resume;
    std::optional<int64_t> stop_after;
    int64_t checkpoint_every = 0;
    CLI::App* train_cmd = app.add_subcommand("train", "train a network on Fashion-MNIST");
    add_train_options(train_cmd, config, threads);
    train_cmd->add_option("--out", out, "output directory")->capture_default_str();
    train_cmd->add_option("--resume", resume, "continue from a checkpoint (model.safetensors or checkpoint.safetensors)")
        ->check(CLI::ExistingFile);
    train_cmd->add_option("--checkpoint-every", checkpoint_every, "steps between checkpoints to DIR/checkpoint.safetensors")
        ->check(CLI::NonNegativeNumber);
    train_cmd->add_option("--stop-after", stop_after, "stop after this many steps (as if interrupted; resume later)")
        ->check(CLI::NonNegativeNumber);

    fs::path checkpoint, eval_data = bnorm::nn::default_fashion_mnist_dir();
    CLI::App* eval_cmd = app.add_subcommand("eval", "test accuracy and loss of a checkpoint");
    eval_cmd->add_option("--checkpoint", checkpoint, "a model.safetensors written by bnorm train")->required()
        ->check(CLI::ExistingFile);
    eval_cmd->add_option("--data", eval_data, "Fashion-MNIST directory")->capture_default_str();
    eval_cmd->add_option("--threads", threads, "threads")->check(CLI::Range(1, 4096));

    bnorm::app::ExperimentOptions experiment;
    CLI::App* experiment_cmd = app.add_subcommand("experiment", "run an experiment end to end and write DIR/report.html");
    experiment_cmd->add_option("name", experiment.name, "paper-mnist, learning-rate, regularization, convnet, covariate-shift or all")
        ->required()->check(CLI::IsMember(bnorm::app::experiment_names()));
    experiment_cmd->add_option("--out", experiment.out, "output directory (default: runs/NAME)");
    experiment_cmd->add_option("--seeds", experiment.seeds, "seeds per configuration")->check(CLI::Range(1, 100))->capture_default_str();
    experiment_cmd->add_option("--steps", experiment.steps, "training steps per run (default: the experiment's own)")
        ->check(CLI::Range(int64_t{100}, int64_t{10000000}));
    experiment_cmd->add_option("--data", experiment.data_dir, "Fashion-MNIST directory")->capture_default_str();
    experiment_cmd->add_option("--threads", threads, "threads")->check(CLI::Range(1, 4096));
    experiment_cmd->add_flag("--sync-bn", experiment.sync_bn,
                             "under mpirun: synchronized batch normalization in every run (docs/distributed.md)");

    bnorm::app::DemoSettings demo;
    CLI::App* demo_cmd = app.add_subcommand("demo", "one forward and backward pass of a BatchNorm module, explained");
    bnorm::app::add_demo_options(demo_cmd, demo);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        if (train_cmd->parsed()) {
            config.eval_blas_threads = set_threads(threads, config.model);
            if (config.steps == 0 && config.epochs == 0) config.steps = 50000;
            config.stop_after = stop_after;
            config.checkpoint_every = checkpoint_every;
            config.comm = comm;
            return train(config, out, resume);
        }
        if (eval_cmd->parsed()) {
            const int eval_blas_threads = set_threads(threads, bnorm::nn::read_checkpoint_config(checkpoint).model);
            return eval(checkpoint, eval_data, eval_blas_threads);
        }
        if (experiment_cmd->parsed()) {
            set_threads(threads, "mlp");  // every experiment but convnet trains the mlp
            experiment.command = bnorm::app::command_line(argc, argv);
            experiment.comm = comm;
            return bnorm::app::run_experiment(experiment);
        }
        if (demo_cmd->parsed()) return bnorm::app::run_demo(demo);
    } catch (const std::exception& e) {
        if (!comm) {
            std::fprintf(stderr, "bnorm: %s\n", e.what());
            return 1;
        }
        // One process's error ends the job at once (the others would wait in a collective).
        std::fprintf(stderr, "bnorm: rank %d: %s\n", comm->rank(), e.what());
        std::fflush(stderr);
#ifdef BNORM_HAVE_MPI
        bnorm::MpiSession::abort(1);
#endif
        return 1;
    }
    return 0;
}
