// trainer.cpp: the training loop. Per step: next batch -> forward -> softmax cross-entropy ->
// backward -> optimizer step. Every `eval_every` steps: accuracy and loss on eval_examples test
// and training images in evaluation mode, and the probe percentiles. Time spent evaluating is
// not counted in `seconds`, so steps/s measures training alone.
#include "bnorm/nn/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <functional>
#include <sstream>
#include <stdexcept>

#include <cblas.h>
#include <nlohmann/json.hpp>

#include "bnorm/nn/checkpoint.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/loss.hpp"
#include "bnorm/nn/models.hpp"
#include "bnorm/nn/optim.hpp"
#include "nn/layers/common.hpp"
#include "nn/math/vector_math.hpp"

namespace bnorm::nn {
namespace {

[[noreturn]] void bad(const std::string& message) { throw std::invalid_argument(message); }

void validate(const TrainConfig& c) {
    if (c.model != "mlp" && c.model != "cnn") bad("--model " + c.model + " is not a model; use mlp or cnn");
    if (c.optimizer != "sgd" && c.optimizer != "adam")
        bad("--optimizer " + c.optimizer + " is not an optimizer; use sgd or adam");
    if (c.schedule != "constant" && c.schedule != "step" && c.schedule != "cosine")
        bad("--schedule " + c.schedule + " is not a schedule; use constant, step or cosine");
    if (c.init != "gaussian" && c.init != "he" && c.init != "xavier")
        bad("--init " + c.init + " is not an initialization; use gaussian, he or xavier");
    if (!(c.lr > 0) || !std::isfinite(c.lr)) bad("--lr must be a positive number");
    if (c.momentum && (!(*c.momentum >= 0) || *c.momentum >= 1)) bad("--momentum must be in [0, 1)");
    if (!(c.weight_decay >= 0)) bad("--weight-decay must be >= 0");
    if (!(c.dropout >= 0 && c.dropout < 1)) bad("--dropout must be in [0, 1)");
    if (c.batch < 2 || c.batch > 60000) bad("--batch must be between 2 and 60000 (batch normalization needs 2)");
    if (c.steps < 0 || c.epochs < 0) bad("--steps and --epochs must be >= 0");
    if (c.steps == 0 && c.epochs == 0) bad("give --steps N or --epochs N");
    if (c.steps > 0 && c.epochs > 0) bad("give --steps or --epochs, not both");
    if (c.eval_every < 1) bad("--eval-every must be >= 1");
    if (c.eval_examples < 1) bad("--eval-examples must be >= 1");
    if (c.stop_after && *c.stop_after < 0) bad("--stop-after must be >= 0");
    if (c.checkpoint_every < 0) bad("--checkpoint-every must be >= 0");
    if (c.channels_last && c.model != "cnn") bad("--channels-last applies to --model cnn only");
    if (c.dropout > 0 && c.model != "mlp") bad("--dropout applies to --model mlp only");
    if (c.split != "even" && c.split != "skewed") bad("--split " + c.split + " is not a split; use even or skewed");
    if (c.bucket_elements < 1) bad("the gradient bucket must hold at least 1 value");
    if (c.comm && c.comm->size() > 1 && c.batch_norm && !c.sync_bn) {
        if (c.split != "even")
            bad("--split " + c.split + " gives some processes fewer than 2 samples; batch normalization per process "
                "needs 2: add --sync-bn");
        if (c.batch / c.comm->size() < 2)
            bad("--batch " + std::to_string(c.batch) + " across " + std::to_string(c.comm->size()) +
                " processes leaves a process fewer than 2 samples; batch normalization per process needs 2: add "
                "--sync-bn or use --batch " + std::to_string(2 * c.comm->size()) + " or more");
    }
}

// The layer whose output feeds the last hidden sigmoid: the layer just before the last Sigmoid.
size_t find_probe_layer(Sequential& model) {
    size_t last_sigmoid = 0;
    for (size_t i = 0; i < model.size(); ++i)
        if (model[i].type() == "Sigmoid") last_sigmoid = i;
    return last_sigmoid > 0 ? last_sigmoid - 1 : 0;
}

double percentile(std::vector<float>& v, double q) {
    if (v.empty()) return 0;
    const size_t k = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

std::string to_text(double v) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    return s.str();
}

// This process's share [begin, end) of a global batch at `step` (TrainConfig::split).
std::pair<int64_t, int64_t> share_of(const std::string& split, int64_t step, int64_t batch, int rank, int size) {
    std::vector<int64_t> counts(static_cast<size_t>(size), 0);
    if (split == "skewed") {
        const int receivers = step % 3 == 0 ? size - 1 : size;  // every third step the last gets none
        const int64_t weights = int64_t{receivers} * (receivers + 1) / 2;
        int64_t given = 0;
        for (int r = 0; r < receivers; ++r) given += counts[static_cast<size_t>(r)] = batch * (r + 1) / weights;
        counts[static_cast<size_t>(receivers - 1)] += batch - given;
    } else {
        for (int r = 0; r < size; ++r) counts[static_cast<size_t>(r)] = batch / size + (r < batch % size ? 1 : 0);
    }
    int64_t begin = 0;
    for (int r = 0; r < rank; ++r) begin += counts[static_cast<size_t>(r)];
    return {begin, begin + counts[static_cast<size_t>(rank)]};
}

// FNV-1a over bytes.
uint64_t fnv1a(uint64_t h, const void* data, size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

}  // namespace

std::map<std::string, std::string> config_to_metadata(const TrainConfig& c) {
    return {{"model", c.model},
            {"batch_norm", c.batch_norm ? "1" : "0"},
            {"channels_last", c.channels_last ? "1" : "0"},
            {"init", c.init},
            {"dropout", to_text(c.dropout)},
            {"optimizer", c.optimizer},
            {"lr", to_text(c.lr)},
            {"momentum", c.momentum ? to_text(*c.momentum) : "none"},
            {"weight_decay", to_text(c.weight_decay)},
            {"schedule", c.schedule},
            {"batch", std::to_string(c.batch)},
            {"steps", std::to_string(c.steps)},
            {"epochs", std::to_string(c.epochs)},
            {"seed", std::to_string(c.seed)},
            {"eval_every", std::to_string(c.eval_every)},
            {"eval_examples", std::to_string(c.eval_examples)},
            {"probe", c.probe ? "1" : "0"}};
}

TrainConfig config_from_metadata(const std::map<std::string, std::string>& m) {
    auto get = [&](const char* key) -> const std::string& {
        const auto it = m.find(std::string("train.") + key);
        if (it == m.end()) throw std::invalid_argument(std::string("checkpoint metadata lacks \"") + key + "\"");
        return it->second;
    };
    TrainConfig c;
    try {
        c.model = get("model");
        c.batch_norm = get("batch_norm") == "1";
        c.channels_last = get("channels_last") == "1";
        c.init = get("init");
        c.dropout = std::stod(get("dropout"));
        c.optimizer = get("optimizer");
        c.lr = std::stod(get("lr"));
        if (get("momentum") != "none") c.momentum = std::stod(get("momentum"));
        c.weight_decay = std::stod(get("weight_decay"));
        c.schedule = get("schedule");
        c.batch = std::stoll(get("batch"));
        c.steps = std::stoll(get("steps"));
        c.epochs = std::stoll(get("epochs"));
        c.seed = std::stoull(get("seed"));
        c.eval_every = std::stoll(get("eval_every"));
        c.eval_examples = std::stoll(get("eval_examples"));
        c.probe = get("probe") == "1";
    } catch (const std::logic_error& e) {
        throw std::invalid_argument(std::string("checkpoint metadata: a training setting is malformed: ") + e.what());
    }
    return c;
}

Trainer::Trainer(TrainConfig config) : config_(std::move(config)) {
    validate(config_);
    train_ = load_fashion_mnist(config_.data_dir, true);
    test_ = load_fashion_mnist(config_.data_dir, false);
    const int64_t steps_per_epoch = (train_.count + config_.batch - 1) / config_.batch;
    total_steps_ = config_.steps > 0 ? config_.steps : config_.epochs * steps_per_epoch;
    if (config_.model == "mlp") {
        const Init init = config_.init == "gaussian" ? Init::gaussian(0.1f) : Init::parse(config_.init);
        model_ = mlp(config_.batch_norm, config_.seed, init, config_.dropout);
    } else {
        model_ = cnn(config_.batch_norm, config_.seed, config_.channels_last);
    }
    if (config_.optimizer == "sgd")
        optimizer_ = std::make_unique<SGD>(model_->parameters(), config_.lr, config_.momentum.value_or(0.0),
                                           config_.weight_decay);
    else
        optimizer_ = std::make_unique<Adam>(model_->parameters(), config_.lr, 0.9, 0.999, 1e-8, config_.weight_decay);
    loader_ = std::make_unique<BatchLoader>(train_, config_.batch, config_.seed, true);
    probe_layer_ = find_probe_layer(*model_);
    model_->set_input_grad_needed(false);  // nothing uses the gradient of the images
    if (distributed()) setup_distributed();
}

// Every process must run the same model on the same data order: checked here, naming the rank
// that differs. With sync_bn the batch-normalization layers get the communicator.
void Trainer::setup_distributed() {
    Communicator& comm = *config_.comm;
    int64_t parameters = 0, elements = 0;
    for (const Parameter& p : model_->parameters()) {
        ++parameters;
        elements += p.value->numel();
    }
    int64_t lr_bits = 0;
    std::memcpy(&lr_bits, &config_.lr, sizeof lr_bits);
    auto hash = [](const std::string& text) { return static_cast<int64_t>(std::hash<std::string>{}(text) & 0x7fffffff); };
    const int64_t settings[] = {hash(config_.model), parameters, elements, config_.batch,
                                static_cast<int64_t>(config_.seed), config_.sync_bn ? 1 : 0, total_steps_,
                                hash(config_.optimizer + "/" + config_.schedule + "/" + config_.split), lr_bits};
    const char* const names[] = {"a different --model", "parameter tensors", "parameter values", "--batch", "--seed",
                                 "--sync-bn", "total steps", "a different --optimizer, --schedule or --split",
                                 "a different --lr (bits)"};
    check_same_on_all(comm, "distributed training", settings, names);
    if (config_.sync_bn)
        for (size_t i = 0; i < model_->size(); ++i)
            if (auto* bn = dynamic_cast<BatchNorm*>(&(*model_)[i])) bn->set_communicator(&comm);
}

// Rank 0 evaluates and sends the result to the others, so that every process holds the same
// history (experiments choose settings from it) without evaluating K times.
EvalPoint Trainer::evaluate_on_rank0(int64_t step, double train_loss, double seconds) {
    if (!distributed()) return evaluate(step, train_loss, seconds);
    EvalPoint p = writes() ? evaluate(step, train_loss, seconds) : EvalPoint{step, train_loss, 0, 0, 0, optimizer_->lr(), seconds};
    const double mine[] = {p.train_accuracy, p.test_accuracy, p.test_loss, p.seconds, p.probe_p15, p.probe_p50, p.probe_p85};
    constexpr size_t k = std::size(mine);
    std::vector<double> all(k * static_cast<size_t>(config_.comm->size()));
    config_.comm->allgather(mine, all);
    p.train_accuracy = all[0], p.test_accuracy = all[1], p.test_loss = all[2], p.seconds = all[3];
    p.probe_p15 = all[4], p.probe_p50 = all[5], p.probe_p85 = all[6];
    return p;
}

void Trainer::take_share(const Tensor& images, std::span<const int32_t> labels) {
    const int64_t batch = images.dim(0), per_example = images.numel() / std::max<int64_t>(batch, 1);
    const auto [begin, end] = share_of(config_.split, step_, batch, config_.comm->rank(), config_.comm->size());
    std::vector<int64_t> shape = images.shape();
    shape[0] = end - begin;
    if (share_images_.shape() != shape) share_images_.resize(shape);
    std::copy(images.data() + begin * per_example, images.data() + end * per_example, share_images_.data());
    share_labels_.assign(labels.begin() + begin, labels.begin() + end);
}

// Sums every gradient over the processes, in buckets of bucket_elements (one allreduce each).
void Trainer::allreduce_gradients() {
    const auto t0 = std::chrono::steady_clock::now();
    const auto limit = static_cast<size_t>(config_.bucket_elements);
    bucket_.reserve(limit);
    std::vector<Parameter> params = model_->parameters();
    size_t first = 0;  // first parameter of the bucket being filled
    bucket_.clear();
    auto flush = [&](size_t end) {
        config_.comm->allreduce_sum(std::span<float>(bucket_));
        size_t at = 0;
        for (size_t i = first; i < end; ++i)
            for (float& g : params[i].grad->values()) g = bucket_[at++];
        bucket_.clear();
        first = end;
    };
    for (size_t i = 0; i < params.size(); ++i) {
        const auto g = params[i].grad->values();
        if (!bucket_.empty() && bucket_.size() + g.size() > limit) flush(i);
        bucket_.insert(bucket_.end(), g.begin(), g.end());
    }
    if (!bucket_.empty()) flush(params.size());
    gradient_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Trainer::finish_distributed(TrainResult& result) {
    Communicator& comm = *config_.comm;
    result.processes = comm.size();
    result.gradient_allreduce_seconds = gradient_seconds_;
    for (size_t i = 0; i < model_->size(); ++i)
        if (auto* bn = dynamic_cast<BatchNorm*>(&(*model_)[i])) result.bn_communication_seconds += bn->communication_seconds();
    uint64_t h = 1469598103934665603ull;
    for (const Parameter& p : model_->parameters()) h = fnv1a(h, p.value->data(), static_cast<size_t>(p.value->numel()) * 4);
    if (config_.sync_bn)
        for (const Buffer& b : model_->buffers())
            h = b.f32 ? fnv1a(h, b.f32->data(), static_cast<size_t>(b.f32->numel()) * 4) : fnv1a(h, b.i64, 8);
    const auto mine = static_cast<int64_t>(h >> 1);
    std::vector<int64_t> all(static_cast<size_t>(comm.size()));
    comm.allgather(std::span<const int64_t>(&mine, 1), all);
    result.parameters_identical = std::all_of(all.begin(), all.end(), [&](int64_t v) { return v == mine; });
    char text[32];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
    result.parameter_hash = text;
}

Trainer::~Trainer() = default;

// Checkpoint metadata: the settings and the training state, under "train." (the checkpoint
// format reserves other names for itself).
std::map<std::string, std::string> Trainer::metadata() const {
    std::map<std::string, std::string> m;
    for (const auto& [key, value] : config_to_metadata(config_)) m["train." + key] = value;
    m["train.step"] = std::to_string(step_);
    m["train.seconds"] = to_text(seconds_);
    m["train.loss_sum"] = to_text(loss_sum_);
    m["train.loss_count"] = std::to_string(loss_count_);
    m["train.data_epoch"] = std::to_string(loader_->epoch());
    m["train.data_position"] = std::to_string(loader_->position());
    nlohmann::json history = nlohmann::json::array();
    for (const EvalPoint& p : history_)
        history.push_back({p.step, p.train_loss, p.train_accuracy, p.test_accuracy, p.test_loss, p.lr, p.seconds,
                           p.probe_p15, p.probe_p50, p.probe_p85});
    m["train.history"] = history.dump();
    return m;
}

void Trainer::save(const std::filesystem::path& path) { save_checkpoint(path, *model_, optimizer_.get(), metadata()); }

void Trainer::resume(const std::filesystem::path& checkpoint) {
    const auto header = read_safetensors_header(checkpoint).metadata;
    const TrainConfig saved = config_from_metadata(header);
    if (saved.model != config_.model || saved.batch_norm != config_.batch_norm || saved.dropout != config_.dropout ||
        saved.optimizer != config_.optimizer)
        throw std::invalid_argument("--resume " + checkpoint.string() + ": the checkpoint is of model " + saved.model +
                                    (saved.batch_norm ? " with" : " without") + " batch normalization, optimizer " +
                                    saved.optimizer + "; train with the same --model, --bn/--no-bn, --dropout and --optimizer");
    const auto m = load_checkpoint(checkpoint, *model_, optimizer_.get());
    try {
        step_ = std::stoll(m.at("train.step"));
        seconds_ = std::stod(m.at("train.seconds"));
        loss_sum_ = std::stod(m.at("train.loss_sum"));
        loss_count_ = std::stoll(m.at("train.loss_count"));
        loader_->seek(std::stoll(m.at("train.data_epoch")), std::stoll(m.at("train.data_position")));
        history_.clear();
        // JSON has no NaN: nlohmann writes it as null (the loss before the first step).
        auto number = [](const nlohmann::json& v) { return v.is_null() ? std::nan("") : v.get<double>(); };
        for (const auto& p : nlohmann::json::parse(m.at("train.history")))
            history_.push_back({p.at(0).get<int64_t>(), number(p.at(1)), number(p.at(2)), number(p.at(3)),
                                number(p.at(4)), number(p.at(5)), number(p.at(6)), number(p.at(7)),
                                number(p.at(8)), number(p.at(9))});
    } catch (const std::exception& e) {
        throw std::invalid_argument("--resume " + checkpoint.string() + ": the training state in the metadata is malformed (" +
                                    e.what() + ")");
    }
}

// "step": x0.1 at 50% and again at 75% of the run (torch's MultiStepLR with those milestones).
static double learning_rate(const TrainConfig& c, int64_t step, int64_t total) {
    if (c.schedule == "step") return c.lr * std::pow(0.1, (2 * step >= total) + (4 * step >= 3 * total));
    if (c.schedule == "cosine") return CosineLR(c.lr, std::max<int64_t>(1, total), 0.0).lr_at(step);
    return c.lr;
}

namespace {

// Sets OpenBLAS's thread count for a scope (n <= 0: unchanged) and restores it.
class BlasThreads {
public:
    explicit BlasThreads(int n) : before_(openblas_get_num_threads()), changed_(n > 0 && n != before_) {
        if (changed_) openblas_set_num_threads(n);
    }
    ~BlasThreads() {
        if (changed_) openblas_set_num_threads(before_);
    }
    BlasThreads(const BlasThreads&) = delete;
    BlasThreads& operator=(const BlasThreads&) = delete;

private:
    int before_;
    bool changed_;
};

}  // namespace

EvalPoint Trainer::evaluate(int64_t step, double train_loss, double seconds) {
    EvalPoint point{step, train_loss, 0, 0, 0, optimizer_->lr(), seconds};
    const BlasThreads threads(config_.eval_blas_threads);
    model_->set_training(false);
    Tensor chunk_images;
    std::vector<int32_t> labels;
    std::vector<float> probe_values;
    auto accuracy = [&](const Dataset& data, double* loss_out, bool probe) {
        const int64_t count = std::min(config_.eval_examples, data.count), pixels = data.rows * data.cols;
        // Chunks of 500 images: their float32 pixels (1.5 MiB) stay in the L2 cache for the first
        // layer's matrix product; scaling the bytes per chunk moves 4x less memory than reading a
        // float32 copy of the whole set.
        const int64_t chunk = 500;
        int64_t correct = 0;
        double loss_sum = 0;
        for (int64_t begin = 0; begin < count; begin += chunk) {
            const int64_t n = std::min(chunk, count - begin);
            detail::set_shape(chunk_images, {n, 1, data.rows, data.cols});
            math::bytes_to_unit(data.pixels.data() + begin * pixels, chunk_images.data(), n * pixels);
            labels.assign(data.labels.begin() + begin, data.labels.begin() + begin + n);
            const Tensor* x = &chunk_images;
            for (size_t i = 0; i < model_->size(); ++i) {
                x = &(*model_)[i].forward(*x);
                if (probe && i == probe_layer_) {
                    // Unit 0 of the probed layer: its input to the sigmoid for every example.
                    const int64_t units = x->dim(1);
                    for (int64_t e = 0; e < n; ++e) probe_values.push_back(x->at(e * units));
                }
            }
            if (loss_out) loss_sum += softmax_cross_entropy(*x, labels) * static_cast<double>(n);  // no gradient
            correct += count_correct(*x, labels);
        }
        if (loss_out) *loss_out = loss_sum / static_cast<double>(count);
        return static_cast<double>(correct) / static_cast<double>(count);
    };
    const auto start = std::chrono::steady_clock::now();
    point.test_accuracy = accuracy(test_, &point.test_loss, config_.probe);
    point.test_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    point.train_accuracy = accuracy(train_, nullptr, false);
    if (config_.probe) {
        point.probe_p15 = percentile(probe_values, 0.15);
        point.probe_p50 = percentile(probe_values, 0.50);
        point.probe_p85 = percentile(probe_values, 0.85);
    }
    model_->set_training(true);
    return point;
}

TrainResult Trainer::run(const std::function<void(const TrainProgress&)>& on_progress) {
    using clock = std::chrono::steady_clock;
    const auto run_start = clock::now();
    Tensor images, grad;
    std::vector<int32_t> labels;
    double recent_loss = 0, recent_accuracy = 0;
    TrainResult result;
    const int64_t end = config_.stop_after ? std::min(total_steps_, *config_.stop_after) : total_steps_;
    if (history_.empty() && step_ == 0 && end > 0) history_.push_back(evaluate_on_rank0(0, std::nan(""), 0));
    model_->set_training(true);
    while (step_ < end) {
        auto t0 = clock::now();
        if (!loader_->next(images, labels)) loader_->next(images, labels);  // a new epoch starts
        if (config_.inspect && config_.inspect_every > 0 && step_ % config_.inspect_every == 0) {
            const auto before = clock::now();
            config_.inspect(step_, *model_, images, labels);
            t0 += clock::now() - before;  // measuring is not training time
        }
        optimizer_->set_lr(learning_rate(config_, step_, total_steps_));
        double loss = 0;
        int64_t correct = 0;
        if (distributed()) {
            // The loss is the whole batch's mean: this share's gradient is scaled by share/batch,
            // and the allreduce below sums the shares' parameter gradients.
            take_share(images, labels);
            const Tensor& logits = model_->forward(share_images_);
            const auto share = static_cast<int64_t>(share_labels_.size());
            double sums[2] = {0, 0};
            if (share > 0) {
                sums[0] = softmax_cross_entropy(logits, share_labels_, grad) * static_cast<double>(share);
                sums[1] = static_cast<double>(count_correct(logits, share_labels_));
                const auto scale = static_cast<float>(static_cast<double>(share) / static_cast<double>(labels.size()));
                for (float& g : grad.values()) g *= scale;
            } else if (grad.shape() != logits.shape()) {
                grad.resize(logits.shape());
            }
            config_.comm->allreduce_sum(std::span<double>(sums, 2));
            loss = sums[0] / static_cast<double>(labels.size());
            correct = static_cast<int64_t>(sums[1]);
        } else {
            const Tensor& logits = model_->forward(images);
            loss = softmax_cross_entropy(logits, labels, grad);
            correct = count_correct(logits, labels);
        }
        if (!std::isfinite(loss)) {
            result.diverged = true;
            ++step_;
            history_.push_back({step_, loss, 0.1, 0.1, loss, optimizer_->lr(), seconds_});
            break;
        }
        model_->backward(grad);
        if (distributed()) allreduce_gradients();
        optimizer_->step();
        ++step_;
        seconds_ += std::chrono::duration<double>(clock::now() - t0).count();
        loss_sum_ += loss;
        ++loss_count_;
        recent_loss = 0.98 * recent_loss + 0.02 * loss;
        recent_accuracy = 0.98 * recent_accuracy + 0.02 * static_cast<double>(correct) / static_cast<double>(labels.size());
        if (step_ % config_.eval_every == 0 || step_ == total_steps_) {
            history_.push_back(evaluate_on_rank0(step_, loss_sum_ / static_cast<double>(loss_count_), seconds_));
            loss_sum_ = 0;
            loss_count_ = 0;
        }
        if (config_.checkpoint_every > 0 && step_ % config_.checkpoint_every == 0 && writes()) save(config_.checkpoint_path);
        if (on_progress && (step_ % 100 == 0 || step_ == end)) {
            const double debias = 1.0 - std::pow(0.98, static_cast<double>(std::min<int64_t>(step_, 1000)));
            on_progress({step_, total_steps_, recent_loss / debias, recent_accuracy / debias});
        }
    }
    if (distributed()) finish_distributed(result);
    result.history = history_;
    result.steps = step_;
    result.seconds = seconds_;
    result.wall_seconds = std::chrono::duration<double>(clock::now() - run_start).count();
    return result;
}

TrainConfig read_checkpoint_config(const std::filesystem::path& checkpoint) {
    return config_from_metadata(read_safetensors_header(checkpoint).metadata);
}

EvalPoint evaluate_checkpoint(const std::filesystem::path& checkpoint, const std::filesystem::path& data_dir,
                              int eval_blas_threads) {
    TrainConfig config = read_checkpoint_config(checkpoint);
    config.eval_blas_threads = eval_blas_threads;
    config.data_dir = data_dir;
    config.eval_examples = 10000;
    Trainer trainer(config);
    trainer.resume(checkpoint);
    return trainer.evaluate_now();
}

}  // namespace bnorm::nn
