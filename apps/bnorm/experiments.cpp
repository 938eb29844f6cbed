// experiments.cpp: the experiments that test what batch normalization claims. Each one is a list
// of training runs plus the figures and tables drawn from their metrics; the numbers in the
// report's text are computed from the runs, never written in by hand.
#include "experiments.hpp"

#include <algorithm>
#include <stdexcept>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <sstream>

#include "bnorm/bnorm.hpp"
#include "bnorm/nn/analysis.hpp"
#include "bnorm/nn/trainer.hpp"
#include "outputs.hpp"
#include "progress.hpp"
#include "report.hpp"

namespace bnorm::app {
namespace {

namespace fs = std::filesystem;
using nn::EvalPoint;
using nn::TrainConfig;
using nn::TrainResult;

std::string fixed(double v, int digits) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", digits, v);
    return b;
}
std::string percent(double v) { return fixed(100 * v, 2) + "%"; }

// The processes every run of this experiment is spread over (ExperimentOptions::comm, sync_bn).
struct Distributed {
    Communicator* comm = nullptr;
    bool sync_bn = false;
    bool rank0() const { return !comm || comm->rank() == 0; }
} distributed;

// Trains one run into dir (metrics.csv, summary.json) with a progress bar labelled `label`.
// Under mpirun every process trains it; rank 0 alone prints and writes.
TrainResult run_one(TrainConfig config, const fs::path& dir, const std::string& label) {
    config.comm = distributed.comm;
    config.sync_bn = distributed.sync_bn;
    nn::Trainer trainer(config);
    if (!distributed.rank0()) return trainer.run();
    fs::create_directories(dir);
    Progress progress(label, trainer.total_steps());
    TrainResult result = trainer.run([&](const nn::TrainProgress& p) {
        progress.update(p.step, {{"loss", p.loss}, {"acc", p.accuracy}});
    });
    write_metrics_csv(dir / "metrics.csv", result);
    write_summary_json(dir / "summary.json", config, result);
    progress.finish(std::string(result.diverged ? "diverged; " : "") + "test accuracy " + percent(result.last().test_accuracy) +
                    ", " + std::to_string(static_cast<long long>(result.steps_per_second())) + " steps/s");
    return result;
}

struct Stats {
    double mean = 0, low = 0, high = 0, stddev = 0;
};

Stats stats(const std::vector<double>& v) {
    Stats s;
    if (v.empty()) return s;
    s.low = *std::min_element(v.begin(), v.end());
    s.high = *std::max_element(v.begin(), v.end());
    for (double x : v) s.mean += x / static_cast<double>(v.size());
    for (double x : v) s.stddev += (x - s.mean) * (x - s.mean) / static_cast<double>(std::max<size_t>(1, v.size() - 1));
    s.stddev = std::sqrt(s.stddev);
    return s;
}

// Mean over seeds of a metric against steps, with the min..max band. Runs that diverged stop
// early; each step averages the runs that reached it.
Series band(const std::string& label, const std::vector<TrainResult>& runs,
            const std::function<double(const EvalPoint&)>& metric, double x_scale = 1.0) {
    std::map<int64_t, std::vector<double>> at;
    for (const auto& r : runs)
        for (const auto& p : r.history)
            if (std::isfinite(metric(p))) at[p.step].push_back(metric(p));
    Series s;
    s.label = label;
    for (const auto& [step, values] : at) {
        const Stats st = stats(values);
        s.x.push_back(static_cast<double>(step) * x_scale);
        s.y.push_back(st.mean);
        if (runs.size() > 1) {
            s.low.push_back(st.low);
            s.high.push_back(st.high);
        }
    }
    return s;
}

// The first evaluated step at which the test accuracy reaches target, or -1.
int64_t steps_to(const TrainResult& r, double target) {
    for (const auto& p : r.history)
        if (p.test_accuracy >= target) return p.step;
    return -1;
}

std::string steps_text(const std::vector<TrainResult>& runs, double target) {
    std::vector<double> v;
    int missed = 0;
    for (const auto& r : runs) {
        const int64_t s = steps_to(r, target);
        if (s < 0) ++missed;
        else v.push_back(static_cast<double>(s));
    }
    if (v.empty()) return "never";
    std::string text = fixed(stats(v).mean, 0);
    if (missed) text += " (" + std::to_string(missed) + " of " + std::to_string(runs.size()) + " never)";
    return text;
}

std::vector<double> finals(const std::vector<TrainResult>& runs, const std::function<double(const EvalPoint&)>& m) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(m(r.last()));
    return v;
}

std::string mean_std(const std::vector<double>& v) {
    const Stats s = stats(v);
    return percent(s.mean) + (v.size() > 1 ? " ± " + fixed(100 * s.stddev, 2) : "");
}

// Runs `seeds` runs of a configuration into out/name/seed-K.
std::vector<TrainResult> run_seeds(TrainConfig config, int seeds, const fs::path& dir, const std::string& label) {
    std::vector<TrainResult> runs;
    for (int k = 1; k <= seeds; ++k) {
        config.seed = static_cast<uint64_t>(k);
        runs.push_back(run_one(config, dir / ("seed-" + std::to_string(k)),
                               label + " (seed " + std::to_string(k) + "/" + std::to_string(seeds) + ")"));
    }
    return runs;
}

TrainConfig mlp_config(const ExperimentOptions& o, bool batch_norm, double lr, int64_t steps) {
    TrainConfig c;
    c.model = "mlp";
    c.batch_norm = batch_norm;
    c.optimizer = "sgd";
    c.lr = lr;
    c.batch = 60;
    c.steps = steps;
    c.eval_every = std::max<int64_t>(1, steps / 50);
    c.data_dir = o.data_dir;
    return c;
}

// ---- paper-mnist ----------------------------------------------------------------------------
struct Sweep {
    std::vector<double> lrs;
    std::vector<double> accuracy;
    double best_lr = 0;
    int64_t steps = 0;
};

Sweep sweep_no_bn(const ExperimentOptions& o, const fs::path& out) {
    Sweep s;
    s.lrs = {0.1, 0.2, 0.5, 1.0, 2.0, 5.0};
    s.steps = std::max<int64_t>(1000, o.steps.value_or(50000) / 5);
    double best = -1;
    for (double lr : s.lrs) {
        TrainConfig c = mlp_config(o, false, lr, s.steps);
        const TrainResult r = run_one(c, out / ("sweep-lr-" + fixed(lr, 2)), "sweep: no BN, lr " + fixed(lr, 2));
        const double acc = r.diverged ? 0.0 : r.last().test_accuracy;
        s.accuracy.push_back(acc);
        if (acc > best) best = acc, s.best_lr = lr;
    }
    return s;
}

Section paper_mnist(const ExperimentOptions& o, const fs::path& out, double* best_lr_out) {
    const Sweep sweep = sweep_no_bn(o, out);
    if (best_lr_out) *best_lr_out = sweep.best_lr;
    const int64_t steps = o.steps.value_or(50000);
    TrainConfig without = mlp_config(o, false, sweep.best_lr, steps), with = mlp_config(o, true, sweep.best_lr, steps);
    without.probe = with.probe = true;
    const auto runs_without = run_seeds(without, o.seeds, out / "mlp", "paper-mnist: no BN");
    const auto runs_with = run_seeds(with, o.seeds, out / "mlp-bn", "paper-mnist: BN");

    Section s;
    s.heading = "paper-mnist: Ioffe & Szegedy's Figure 1 on Fashion-MNIST";
    auto test_acc = [](const EvalPoint& p) { return p.test_accuracy; };
    const auto final_without = finals(runs_without, test_acc), final_with = finals(runs_with, test_acc);
    const double target = stats(final_without).mean;
    s.paragraphs.push_back(
        "The paper's MNIST network: 784 inputs, three fully-connected hidden layers of 100 sigmoid units, 10 outputs, "
        "mini-batches of 60, " + std::to_string(steps) + " steps, with and without batch normalization before each "
        "sigmoid (the hidden layers have no bias under BN: β replaces it). Weights start N(0, 0.1²) (the paper's "
        "\"small random Gaussian values\"), biases 0; plain SGD. The paper gives no learning rate, so it was chosen for "
        "the network WITHOUT batch normalization: a sweep of " + std::to_string(sweep.lrs.size()) + " rates for " +
        std::to_string(sweep.steps) + " steps picked " + fixed(sweep.best_lr, 2) +
        (sweep.best_lr == sweep.lrs.back() || sweep.best_lr == sweep.lrs.front()
             ? " (at the edge of the grid: a wider sweep might find a better rate)"
             : "") +
        ", and both networks use it. " +
        std::to_string(o.seeds) + " seeds each; lines are the mean, bands the min..max over seeds.");
    s.paragraphs.push_back(
        "Claim: batch normalization trains faster and reaches higher accuracy. Measured: final test accuracy " +
        mean_std(final_with) + " with BN against " + mean_std(final_without) + " without; the BN network reaches "
        "the no-BN network's final accuracy (" + percent(target) + ") after " + steps_text(runs_with, target) +
        " steps, against " + steps_text(runs_without, target) + " for the network without BN.");
    s.paragraphs.push_back(
        "Claim: the distribution of a layer's inputs is steadier with BN (Figure 1 b, c). Measured: the 15th, 50th and "
        "85th percentiles of the input of one sigmoid of the last hidden layer over the test images, at each "
        "evaluation (seed 1).");

    Figure a;
    a.title = "(a) test accuracy";
    a.xlabel = "training step";
    a.ylabel = "test accuracy";
    a.series = {band("without BN", runs_without, test_acc), band("with BN", runs_with, test_acc)};
    a.caption = "Test accuracy against training steps (mean over seeds, band: min..max).";
    auto percentiles = [](const std::string& title, const TrainResult& r) {
        Figure f;
        f.title = title;
        f.xlabel = "training step";
        f.ylabel = "sigmoid input";
        const std::vector<TrainResult> one{r};
        f.series = {band("15th percentile", one, [](const EvalPoint& p) { return p.step ? p.probe_p15 : NAN; }),
                    band("50th percentile", one, [](const EvalPoint& p) { return p.step ? p.probe_p50 : NAN; }),
                    band("85th percentile", one, [](const EvalPoint& p) { return p.step ? p.probe_p85 : NAN; })};
        return f;
    };
    s.figures = {a, percentiles("(b) without BN: input of a last-layer sigmoid", runs_without.front()),
                 percentiles("(c) with BN: input of a last-layer sigmoid", runs_with.front())};

    Table sweep_table;
    sweep_table.caption = "Learning-rate sweep of the network without BN (" + std::to_string(sweep.steps) + " steps, seed 1)";
    sweep_table.header = {"learning rate", "test accuracy"};
    for (size_t i = 0; i < sweep.lrs.size(); ++i)
        sweep_table.rows.push_back({fixed(sweep.lrs[i], 2) + (sweep.lrs[i] == sweep.best_lr ? " (best)" : ""),
                                    percent(sweep.accuracy[i])});
    Table result;
    result.caption = "Results over " + std::to_string(o.seeds) + " seeds";
    result.header = {"network", "final test accuracy", "final train loss", "steps to " + percent(target), "steps/s"};
    for (const auto* runs : {&runs_without, &runs_with}) {
        std::vector<double> sps;
        for (const auto& r : *runs) sps.push_back(r.steps_per_second());
        result.rows.push_back({runs == &runs_with ? "with BN" : "without BN", mean_std(finals(*runs, test_acc)),
                               fixed(stats(finals(*runs, [](const EvalPoint& p) { return p.train_loss; })).mean, 4),
                               steps_text(*runs, target), fixed(stats(sps).mean, 0)});
    }
    s.tables = {result, sweep_table};
    // The probed sigmoid input's spread over training (after the first tenth): how far its median
    // wanders (max - min) and the mean 15th-85th percentile width.
    auto wander = [](const TrainResult& r) {
        double low = INFINITY, high = -INFINITY, width = 0;
        int count = 0;
        const int64_t from = r.history.empty() ? 0 : r.history.back().step / 10;
        for (const EvalPoint& p : r.history)
            if (p.step > from) {
                low = std::min(low, p.probe_p50);
                high = std::max(high, p.probe_p50);
                width += p.probe_p85 - p.probe_p15;
                ++count;
            }
        return std::pair<double, double>{count ? high - low : NAN, count ? width / count : NAN};
    };
    const auto [wander_without, width_without] = wander(runs_without.front());
    const auto [wander_with, width_with] = wander(runs_with.front());
    s.claims.push_back({"Training converges faster",
                        "steps to the no-BN network's final accuracy (" + percent(target) + "): " +
                            steps_text(runs_with, target) + " with BN, " + steps_text(runs_without, target) +
                            " without"});
    s.claims.push_back({"Batch normalization reaches a higher accuracy",
                        "final test accuracy " + mean_std(final_with) + " with BN, " + mean_std(final_without) +
                            " without (" + std::to_string(o.seeds) + " seeds)"});
    s.claims.push_back({"Each layer sees a steadier input distribution (Figure 1 b, c)",
                        "median of one last-layer sigmoid input moves over a range of " + fixed(wander_with, 2) +
                            " with BN, " + fixed(wander_without, 2) + " without; its 15th-85th percentile width " +
                            fixed(width_with, 2) + " with BN, " + fixed(width_without, 2) +
                            " without (after the first tenth of training, seed 1)"});
    return s;
}

// ---- learning-rate --------------------------------------------------------------------------
Section learning_rate(const ExperimentOptions& o, const fs::path& out, std::optional<double> base_lr) {
    if (!base_lr) base_lr = sweep_no_bn(o, out).best_lr;
    const int64_t steps = o.steps.value_or(20000);
    const std::vector<double> multipliers{1, 5, 30};
    std::map<std::pair<bool, double>, std::vector<TrainResult>> runs;
    for (double k : multipliers)
        for (bool bn : {false, true})
            runs[{bn, k}] = run_seeds(mlp_config(o, bn, *base_lr * k, steps), o.seeds,
                                      out / ((bn ? "bn-x" : "nobn-x") + fixed(k, 0)),
                                      std::string("learning-rate: ") + (bn ? "BN" : "no BN") + ", lr x" + fixed(k, 0));
    auto test_acc = [](const EvalPoint& p) { return p.test_accuracy; };
    const double target = stats(finals(runs[{false, 1.0}], test_acc)).mean;
    Section s;
    s.heading = "learning-rate: higher learning rates with batch normalization";
    s.paragraphs.push_back(
        "Claim: batch normalization tolerates much higher learning rates. Both networks of paper-mnist trained at the "
        "no-BN network's best learning rate (" + fixed(*base_lr, 2) + ") times 1, 5 and 30, " + std::to_string(steps) +
        " steps, " + std::to_string(o.seeds) + " seeds. Target: the final accuracy of the no-BN network at ×1 (" +
        percent(target) + "). A run diverges when its loss stops being finite; it stalls when it ends below 20% "
        "test accuracy.");
    Table t;
    t.caption = "Steps to reach " + percent(target) + " and final test accuracy";
    t.header = {"network", "learning rate", "steps to target", "final test accuracy", "diverged", "stalled"};
    std::string lr_summary;
    Figure f;
    f.title = "test accuracy at ×1, ×5, ×30 the base learning rate";
    f.xlabel = "training step";
    f.ylabel = "test accuracy";
    f.y_min = 0;
    f.y_max = 1;
    for (double k : multipliers)
        for (bool bn : {false, true}) {
            const auto& r = runs[{bn, k}];
            int diverged = 0, stalled = 0;
            for (const auto& run : r) {
                diverged += run.diverged;
                stalled += !run.diverged && run.last().test_accuracy < 0.2;
            }
            const std::string name = std::string(bn ? "with BN" : "without BN");
            t.rows.push_back({name, fixed(*base_lr * k, 2) + " (×" + fixed(k, 0) + ")", steps_text(r, target),
                              mean_std(finals(r, test_acc)), std::to_string(diverged) + " of " + std::to_string(r.size()),
                              std::to_string(stalled) + " of " + std::to_string(r.size())});
            f.series.push_back(band(name + " ×" + fixed(k, 0), r, test_acc));
            if (k > 1)
                lr_summary += std::string(lr_summary.empty() ? "" : "; ") + name + " at ×" + fixed(k, 0) + ": " +
                              (stalled + diverged == static_cast<int>(r.size())
                                   ? "fails (" + std::to_string(diverged) + " diverged, " + std::to_string(stalled) +
                                         " stalled of " + std::to_string(r.size()) + ")"
                                   : "reaches the target after " + steps_text(r, target) + " steps, final " +
                                         mean_std(finals(r, test_acc)));
        }
    s.claims.push_back({"It tolerates much higher learning rates", lr_summary});
    s.tables = {t};
    s.figures = {f};
    return s;
}

// ---- regularization -------------------------------------------------------------------------
Section regularization(const ExperimentOptions& o, const fs::path& out, double lr) {
    const int64_t steps = o.steps.value_or(30000);
    struct Variant {
        std::string name;
        bool bn;
        double dropout;
    };
    const std::vector<Variant> variants{{"neither", false, 0}, {"BN", true, 0}, {"Dropout 0.2", false, 0.2}, {"BN + Dropout 0.2", true, 0.2}};
    Section s;
    s.heading = "regularization: the train/test gap";
    s.paragraphs.push_back(
        "Claim: the noise of mini-batch statistics regularizes, reducing the need for Dropout. The paper-mnist MLP at "
        "learning rate " + fixed(lr, 2) + ", " + std::to_string(steps) + " steps, " + std::to_string(o.seeds) +
        " seeds, with BN, with Dropout (p = 0.2 after each hidden sigmoid), with both and with neither. Train accuracy "
        "is measured in evaluation mode on 10,000 training images, like the test accuracy on the 10,000 test images.");
    Table t;
    t.caption = "Final accuracies and the gap";
    t.header = {"variant", "train accuracy", "test accuracy", "gap (train − test)"};
    Figure f;
    f.title = "train − test accuracy gap";
    f.xlabel = "training step";
    f.ylabel = "gap";
    auto gap = [](const EvalPoint& p) { return p.step ? p.train_accuracy - p.test_accuracy : NAN; };
    std::string gaps;
    for (const Variant& v : variants) {
        TrainConfig c = mlp_config(o, v.bn, lr, steps);
        c.dropout = v.dropout;
        std::string dir = v.name;
        std::replace(dir.begin(), dir.end(), ' ', '-');
        std::replace(dir.begin(), dir.end(), '+', 'p');
        const auto runs = run_seeds(c, o.seeds, out / dir, "regularization: " + v.name);
        const auto train = finals(runs, [](const EvalPoint& p) { return p.train_accuracy; });
        const auto test = finals(runs, [](const EvalPoint& p) { return p.test_accuracy; });
        t.rows.push_back({v.name, mean_std(train), mean_std(test), fixed(100 * (stats(train).mean - stats(test).mean), 2) + " points"});
        f.series.push_back(band(v.name, runs, gap));
        gaps += std::string(gaps.empty() ? "" : ", ") + v.name + " " +
                fixed(100 * (stats(train).mean - stats(test).mean), 2) + " (test " + percent(stats(test).mean) + ")";
    }
    s.claims.push_back({"The noise of batch statistics regularizes (less need for Dropout)",
                        "train - test gap in points: " + gaps});
    s.tables = {t};
    s.figures = {f};
    return s;
}

// ---- convnet --------------------------------------------------------------------------------
Section convnet(const ExperimentOptions& o, const fs::path& out) {
    const int64_t epochs = 3;
    const int64_t steps_per_epoch = 1000;  // 60,000 images / batch 60
    Section s;
    s.heading = "convnet: a convolutional network with and without BatchNorm2d";
    Figure f;
    f.title = "test accuracy against epochs";
    f.xlabel = "epoch";
    f.ylabel = "test accuracy";
    Table t;
    t.caption = "Final test accuracy";
    t.header = {"network", "test accuracy", "steps/s"};
    std::string cnn_summary;
    const int64_t c_steps = o.steps.value_or(epochs * steps_per_epoch);
    for (bool bn : {false, true}) {
        TrainConfig c;
        c.model = "cnn";
        c.batch_norm = bn;
        c.optimizer = "sgd";
        c.lr = 0.05;
        c.momentum = 0.9;
        c.batch = 60;
        c.steps = o.steps.value_or(epochs * steps_per_epoch);
        c.eval_every = steps_per_epoch / 4;
        c.eval_examples = 2000;
        c.data_dir = o.data_dir;
        const int seeds = std::min(o.seeds, 2);
        const auto runs = run_seeds(c, seeds, out / (bn ? "cnn-bn" : "cnn"), std::string("convnet: ") + (bn ? "BN" : "no BN"));
        f.series.push_back(band(bn ? "with BatchNorm2d" : "without", runs, [](const EvalPoint& p) { return p.test_accuracy; },
                                1.0 / static_cast<double>(steps_per_epoch)));
        std::vector<double> sps;
        for (const auto& r : runs) sps.push_back(r.steps_per_second());
        const std::string accuracy = mean_std(finals(runs, [](const EvalPoint& p) { return p.test_accuracy; }));
        t.rows.push_back({bn ? "with BatchNorm2d" : "without", accuracy, fixed(stats(sps).mean, 0)});
        cnn_summary += std::string(cnn_summary.empty() ? "" : ", ") + (bn ? "with BatchNorm2d " : "without ") + accuracy;
    }
    s.claims.push_back({"It helps convolutional networks too",
                        "test accuracy after " + std::to_string(c_steps / steps_per_epoch) + " epochs: " + cnn_summary});
    s.paragraphs.push_back(
        "Conv(1→32, 3×3) [BN] ReLU MaxPool Conv(32→64, 3×3) [BN] ReLU MaxPool Linear(3136→128) ReLU Linear(128→10), He "
        "initialization, SGD with momentum 0.9 at learning rate 0.05, batch 60; test accuracy on 2,000 test images "
        "four times per epoch.");
    s.figures = {f};
    s.tables = {t};
    return s;
}

// ---- covariate-shift -------------------------------------------------------------------------
Section covariate_shift(const ExperimentOptions& o, const fs::path& out, std::optional<double> base_lr) {
    if (!base_lr) base_lr = sweep_no_bn(o, out).best_lr;
    const int64_t steps = o.steps.value_or(10000);
    const int64_t every = std::max<int64_t>(1, steps / 25);
    const std::vector<double> etas{0.05, 0.1, 0.2, 0.5, 1, 2, 4};
    struct Record {
        std::vector<double> step;
        std::map<std::string, std::vector<double>> l2, cosine;
        std::vector<double> loss_range, gradient_change;
    };
    Section s;
    s.heading = "covariate-shift: Santurkar et al.'s measurements";
    s.paragraphs.push_back(
        "Claim: batch normalization reduces internal covariate shift, the change of a layer's input distribution "
        "caused by the updates of the layers before it. Santurkar et al. (2018) measure it through gradients: for "
        "each layer, G is the gradient of its weights on a batch; G' is the same gradient after every earlier layer "
        "took its SGD step on that batch. A steadier input means G' close to G: a small ℓ2 difference and a cosine "
        "near 1. They also measure the loss landscape along the gradient g: how much the loss L(θ − ηg) varies over "
        "step sizes η in {0.05 … 4} (its range), and the largest gradient change ||∇L(θ) − ∇L(θ − ηg)|| "
        "(β-smoothness: smaller is smoother). The paper-mnist MLP at learning rate " + fixed(*base_lr, 2) + ", " +
        std::to_string(steps) + " steps, measured every " + std::to_string(every) + " steps on the training batch "
        "of that step (seed 1); the measurement restores the network exactly, so training is unchanged.");
    Figure l2, cosine, range, predictiveness;
    l2.title = "ℓ2 change of each layer's gradient (G vs G')";
    cosine.title = "cosine of each layer's gradients (G, G')";
    range.title = "loss range along the gradient";
    predictiveness.title = "largest gradient change along the gradient";
    for (Figure* f : {&l2, &cosine, &range, &predictiveness}) f->xlabel = "training step";
    l2.ylabel = "||G − G'||";
    l2.log_y = true;
    cosine.ylabel = "cos(G, G')";
    range.ylabel = "max − min of L(θ − ηg)";
    range.log_y = true;
    predictiveness.ylabel = "max ||∇L(θ) − ∇L(θ − ηg)||";
    predictiveness.log_y = true;
    Table t;
    t.caption = "Means over the measurements of the second half of training";
    t.header = {"network", "ℓ2 change (mean over layers)", "cosine (mean over layers)", "loss range", "gradient change"};
    std::string shift_summary, smooth_summary;
    for (bool bn : {false, true}) {
        Record rec;
        TrainConfig c = mlp_config(o, bn, *base_lr, steps);
        c.seed = 1;
        c.inspect_every = every;
        c.inspect = [&](int64_t step, nn::Sequential& net, const nn::Tensor& images, std::span<const int32_t> labels) {
            rec.step.push_back(static_cast<double>(step));
            for (const auto& g : nn::measure_gradient_shift(net, images, labels, *base_lr)) {
                rec.l2[g.layer].push_back(g.l2);
                rec.cosine[g.layer].push_back(g.cosine);
            }
            const nn::Smoothness sm = nn::measure_smoothness(net, images, labels, etas);
            double low = INFINITY, high = -INFINITY, change = 0;
            for (size_t i = 0; i < sm.loss.size(); ++i) {
                low = std::min(low, sm.loss[i]);
                high = std::max(high, sm.loss[i]);
                change = std::max(change, sm.gradient_change[i]);
            }
            rec.loss_range.push_back(high - low);
            rec.gradient_change.push_back(change);
        };
        const std::string name = bn ? "with BN" : "without BN";
        run_one(c, out / (bn ? "mlp-bn" : "mlp"), "covariate-shift: " + std::string(bn ? "BN" : "no BN"));
        std::vector<double> l2_late, cos_late;
        const size_t half = rec.step.size() / 2;
        for (const auto& [layer, values] : rec.l2) {
            l2.series.push_back({name + " " + layer, rec.step, values, {}, {}});
            for (size_t i = half; i < values.size(); ++i) l2_late.push_back(values[i]);
        }
        for (const auto& [layer, values] : rec.cosine) {
            cosine.series.push_back({name + " " + layer, rec.step, values, {}, {}});
            for (size_t i = half; i < values.size(); ++i) cos_late.push_back(values[i]);
        }
        range.series.push_back({name, rec.step, rec.loss_range, {}, {}});
        predictiveness.series.push_back({name, rec.step, rec.gradient_change, {}, {}});
        const std::vector<double> range_late(rec.loss_range.begin() + static_cast<std::ptrdiff_t>(half), rec.loss_range.end());
        const std::vector<double> change_late(rec.gradient_change.begin() + static_cast<std::ptrdiff_t>(half),
                                              rec.gradient_change.end());
        t.rows.push_back({name, fixed(stats(l2_late).mean, 4), fixed(stats(cos_late).mean, 4),
                          fixed(stats(range_late).mean, 4), fixed(stats(change_late).mean, 4)});
        shift_summary += std::string(shift_summary.empty() ? "" : "; ") + name + ": gradient change ℓ2 " +
                         fixed(stats(l2_late).mean, 3) + ", cosine " + fixed(stats(cos_late).mean, 3);
        smooth_summary += std::string(smooth_summary.empty() ? "" : "; ") + name + ": loss range " +
                          fixed(stats(range_late).mean, 3) + ", largest gradient change " +
                          fixed(stats(change_late).mean, 3);
    }
    s.claims.push_back({"It reduces internal covariate shift (Santurkar et al.'s gradient measure: smaller ℓ2, cosine nearer 1)",
                        shift_summary + " (second half of training)"});
    s.claims.push_back({"It makes the loss landscape smoother (Santurkar et al.)", smooth_summary});
    s.paragraphs.push_back("What the measurement shows is in the table and figures below, whichever way it falls; "
                           "Santurkar et al. report similar or worse gradient change with BN (VGG on CIFAR-10, a deep "
                           "linear network) and a smoother loss landscape.");
    s.figures = {l2, cosine, range, predictiveness};
    s.tables = {t};
    return s;
}

std::string today() {
    const std::time_t now = std::time(nullptr);
    char b[64];
    std::strftime(b, sizeof b, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    return b;
}

}  // namespace

std::vector<std::string> experiment_names() {
    return {"paper-mnist", "learning-rate", "regularization", "convnet", "covariate-shift", "all"};
}

int run_experiment(const ExperimentOptions& o) {
    const fs::path out = o.out.empty() ? fs::path("runs") / o.name : o.out;
    distributed = {o.comm && o.comm->size() > 1 ? o.comm : nullptr, o.sync_bn};
    if (distributed.comm && (o.name == "covariate-shift" || o.name == "all"))
        throw std::invalid_argument("experiment " + o.name +
                                    ": covariate-shift measures gradients of the whole network on single batches in "
                                    "one process; run it without mpirun (the other experiments run under mpirun)");
    if (distributed.rank0()) fs::create_directories(out);
    const auto start = std::chrono::steady_clock::now();
    Report report;
    report.title = "bnorm experiment " + o.name;
    report.command = o.command;
    report.date = today();
    report.machine = machine_description();
    report.settings = {{"seeds", std::to_string(o.seeds)},
                       {"steps per run", o.steps ? std::to_string(*o.steps) : "each experiment's default"},
                       {"data", o.data_dir.string()},
                       {"bnorm version", bnorm::version()}};
    const bool all = o.name == "all";
    std::optional<double> best_lr;
    if (all || o.name == "paper-mnist") {
        double lr = 0;
        report.sections.push_back(paper_mnist(o, all ? out / "paper-mnist" : out, &lr));
        best_lr = lr;
    }
    if (all || o.name == "learning-rate") report.sections.push_back(learning_rate(o, all ? out / "learning-rate" : out, best_lr));
    if (all || o.name == "regularization")
        report.sections.push_back(regularization(o, all ? out / "regularization" : out, best_lr.value_or(0.5)));
    if (all || o.name == "convnet") report.sections.push_back(convnet(o, all ? out / "convnet" : out));
    if (all || o.name == "covariate-shift")
        report.sections.push_back(covariate_shift(o, all ? out / "covariate-shift" : out, best_lr));
    const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60;
    report.settings.push_back({"wall time", fixed(minutes, 1) + " minutes"});
    if (!distributed.rank0()) return 0;
    for (const auto& entry : fs::recursive_directory_iterator(out))
        if (entry.path().filename() == "metrics.csv") report.raw_files.push_back(fs::relative(entry.path(), out).string());
    std::sort(report.raw_files.begin(), report.raw_files.end());
    if (distributed.comm)
        report.settings.push_back({"processes", std::to_string(distributed.comm->size()) +
                                                    (distributed.sync_bn ? " (mpirun, --sync-bn)" : " (mpirun, ghost batches)")});
    write_report(out / "report.html", report);
    std::printf("report: %s\n", fs::absolute(out / "report.html").string().c_str());
    return 0;
}

}  // namespace bnorm::app
