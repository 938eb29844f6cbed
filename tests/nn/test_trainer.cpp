// The training loop as a whole (Trainer::run): after its first steps a step allocates nothing —
// not the batch loader (also across epoch boundaries), not the forward and backward passes, the
// loss, the optimizer or the learning-rate schedule. Counted by this binary's global operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

#include "bnorm/nn/trainer.hpp"
#include "nn/data_files.hpp"

#include "nn/allocation_counter.hpp"  // the global operator new of this binary counts while armed

namespace bnorm::nn {
namespace {

// A small Fashion-MNIST look-alike: `count` training and 50 test images of 28x28, 10 classes.
void write_data(const std::filesystem::path& dir, uint32_t count) {
    for (const auto& [split, n] : {std::pair<std::string, uint32_t>{"train", count}, {"t10k", 50u}}) {
        test::Bytes pixels(static_cast<size_t>(n) * 784), labels(n);
        for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
        for (uint32_t i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 10);
        test::write_file(dir / (split + "-images-idx3-ubyte"), test::idx_images_bytes(n, 28, 28, pixels));
        test::write_file(dir / (split + "-labels-idx1-ubyte"), test::idx_labels_bytes(n, labels));
    }
}

class TrainerAllocations : public ::testing::TestWithParam<int> {};

TEST_P(TrainerAllocations, steps_after_the_first_allocate_nothing_across_epochs) {
    test::ScratchDir dir("trainer-alloc");
    write_data(dir.path(), 300);  // 5 batches of 60 per epoch: the counted steps cross 8 epochs
    TrainConfig c;
    c.data_dir = dir.path();
    c.batch = 60;
    c.steps = 60;
    c.eval_every = 1000000;  // evaluation (which allocates) only at the end, outside the count
    c.eval_examples = 50;
    switch (GetParam()) {
        case 0: c.model = "mlp"; c.momentum = 0.9; c.dropout = 0.2; c.schedule = "cosine"; break;
        case 1: c.model = "mlp"; c.batch_norm = false; c.optimizer = "adam"; c.lr = 1e-3; c.weight_decay = 1e-4; break;
        default: c.model = "cnn"; c.channels_last = true; c.momentum = 0.9; c.lr = 0.05; c.steps = 25; break;
    }
    const int64_t first_counted = 3, last_counted = c.steps - 2;
    int64_t counted_steps = 0;
    c.inspect_every = 1;
    c.inspect = [&](int64_t step, Sequential&, const Tensor&, std::span<const int32_t>) {
        if (step == first_counted) {
            allocations = 0;
            counting_allocations = true;
        }
        if (step == last_counted) counting_allocations = false;
        if (counting_allocations) ++counted_steps;
    };
    Trainer trainer(c);
    const TrainResult result = trainer.run();
    counting_allocations = false;
    EXPECT_EQ(result.steps, c.steps);
    EXPECT_EQ(counted_steps, last_counted - first_counted);
    EXPECT_EQ(allocations.load(), 0) << "allocations in " << counted_steps << " steps";
}

std::string case_name(const ::testing::TestParamInfo<int>& p) {
    return p.param == 0 ? "mlp_bn_sgd_momentum_dropout_cosine" : p.param == 1 ? "mlp_adam_weight_decay" : "cnn_bn_channels_last";
}
INSTANTIATE_TEST_SUITE_P(Models, TrainerAllocations, ::testing::Values(0, 1, 2), case_name);

// The counter is live: an allocation inside the counted window is seen (so the test above can fail).
TEST(TrainerAllocations, the_counter_sees_an_allocation_in_the_window) {
    allocations = 0;
    counting_allocations = true;
    auto* p = new std::string(100, 'x');
    counting_allocations = false;
    delete p;
    EXPECT_GE(allocations.load(), 1);
}

}  // namespace
}  // namespace bnorm::nn
