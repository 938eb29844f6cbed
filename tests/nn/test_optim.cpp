// test_optim.cpp: SGD and Adam against hand-computed updates, the schedules against their
// formulas, argument checks, and hyperparameter export/import.
//
// Run as `nn_optim --write-trajectory FILE`, the binary writes instead the parameter trajectories of
// several optimizer configurations (and the schedules' values) as JSON, which
// tests/nn/optim_parity.py replays with torch.optim and compares.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bnorm/nn/optim.hpp"

namespace bnorm::nn {
namespace {

// Parameters that the test owns: values and grads set by hand.
struct Params {
    std::vector<Tensor> values;
    std::vector<Tensor> grads;
    std::vector<std::string> names;

    void add(std::string name, std::vector<int64_t> shape, std::vector<float> init) {
        names.push_back(std::move(name));
        values.emplace_back(shape);
        grads.emplace_back(shape);
        for (size_t i = 0; i < init.size(); ++i) values.back().at(static_cast<int64_t>(i)) = init[i];
    }
    std::vector<Parameter> parameters() {
        std::vector<Parameter> out;
        for (size_t i = 0; i < values.size(); ++i) out.push_back({names[i], &values[i], &grads[i]});
        return out;
    }
    void set_grad(size_t i, std::vector<float> g) {
        for (size_t j = 0; j < g.size(); ++j) grads[i].at(static_cast<int64_t>(j)) = g[j];
    }
};

// The float32 result agrees with the double-precision formula to float rounding.
void expect_close(float got, double want) { EXPECT_NEAR(got, want, 2e-6 * std::max(1.0, std::abs(want))); }

template <class F>
void expect_invalid_argument_naming(F make, const std::string& name) {
    try {
        make();
        ADD_FAILURE() << "no std::invalid_argument for a bad " << name;
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
}

TEST(SGD, plain_step_is_p_minus_lr_times_grad) {
    Params ps;
    ps.add("w", {2}, {1.0f, -2.0f});
    SGD sgd(ps.parameters(), 0.1);
    ps.set_grad(0, {0.5f, 0.25f});
    sgd.step();
    expect_close(ps.values[0].at(0), 1.0 - 0.1 * 0.5);
    expect_close(ps.values[0].at(1), -2.0 - 0.1 * 0.25);
    ps.set_grad(0, {-1.0f, 3.0f});
    sgd.step();
    expect_close(ps.values[0].at(0), 0.95 + 0.1);
    expect_close(ps.values[0].at(1), -2.025 - 0.3);
    EXPECT_EQ(sgd.steps(), 2);
}

TEST(SGD, momentum_and_weight_decay_match_torch_formula_for_three_steps) {
    Params ps;
    ps.add("w", {3}, {0.5f, -1.5f, 2.0f});
    const double lr = 0.05, momentum = 0.9, wd = 0.01;
    SGD sgd(ps.parameters(), lr, momentum, wd);
    std::vector<double> p = {0.5, -1.5, 2.0}, buf(3, 0.0);
    const std::vector<std::vector<float>> grads = {{0.1f, -0.2f, 0.3f}, {0.4f, 0.0f, -0.6f}, {-0.7f, 0.8f, 0.9f}};
    for (int step = 0; step < 3; ++step) {
        ps.set_grad(0, grads[step]);
        sgd.step();
        for (size_t j = 0; j < 3; ++j) {
            const double d_p = grads[step][j] + wd * p[j];
            buf[j] = step == 0 ? d_p : momentum * buf[j] + d_p;
            p[j] -= lr * buf[j];
            expect_close(ps.values[0].at(static_cast<int64_t>(j)), p[j]);
        }
    }
    const auto state = sgd.state();
    ASSERT_EQ(state.size(), 1u);
    EXPECT_EQ(state[0].name, "optimizer.w.momentum_buffer");
    for (size_t j = 0; j < 3; ++j) expect_close(state[0].value->at(static_cast<int64_t>(j)), buf[j]);
}

TEST(SGD, nesterov_matches_torch_formula_for_three_steps) {
    Params ps;
    ps.add("w", {2}, {1.0f, -1.0f});
    const double lr = 0.1, momentum = 0.8, wd = 0.02;
    SGD sgd(ps.parameters(), lr, momentum, wd, /*nesterov=*/true);
    std::vector<double> p = {1.0, -1.0}, buf(2, 0.0);
    const std::vector<std::vector<float>> grads = {{0.3f, -0.5f}, {0.25f, 0.75f}, {-1.0f, 0.125f}};
    for (int step = 0; step < 3; ++step) {
        ps.set_grad(0, grads[step]);
        sgd.step();
        for (size_t j = 0; j < 2; ++j) {
            double d_p = grads[step][j] + wd * p[j];
            buf[j] = step == 0 ? d_p : momentum * buf[j] + d_p;
            d_p += momentum * buf[j];
            p[j] -= lr * d_p;
            expect_close(ps.values[0].at(static_cast<int64_t>(j)), p[j]);
        }
    }
}

TEST(SGD, set_lr_applies_to_the_next_step) {
    Params ps;
    ps.add("w", {1}, {1.0f});
    SGD sgd(ps.parameters(), 0.1);
    ps.set_grad(0, {1.0f});
    sgd.set_lr(0.25);
    EXPECT_EQ(sgd.lr(), 0.25);
    sgd.step();
    expect_close(ps.values[0].at(0), 0.75);
    sgd.set_lr(0.0);  // a schedule may end at 0: allowed here, not in the constructor
    sgd.step();
    expect_close(ps.values[0].at(0), 0.75);
}

TEST(Adam, matches_torch_formula_with_bias_correction_for_three_steps) {
    Params ps;
    ps.add("w", {2}, {0.5f, -0.25f});
    ps.add("b", {1}, {2.0f});
    const double lr = 0.01, beta1 = 0.8, beta2 = 0.95, eps = 1e-6;
    Adam adam(ps.parameters(), lr, beta1, beta2, eps);
    std::vector<double> p = {0.5, -0.25, 2.0}, m(3, 0.0), v(3, 0.0);
    const std::vector<std::vector<float>> grads = {{0.1f, -0.2f, 3.0f}, {0.4f, 0.0f, -0.5f}, {-0.7f, 1e-4f, 0.9f}};
    for (int step = 0; step < 3; ++step) {
        ps.set_grad(0, {grads[step][0], grads[step][1]});
        ps.set_grad(1, {grads[step][2]});
        adam.step();
        const double t = step + 1;
        for (size_t j = 0; j < 3; ++j) {
            const double g = grads[step][j];
            m[j] = beta1 * m[j] + (1 - beta1) * g;
            v[j] = beta2 * v[j] + (1 - beta2) * g * g;
            const double m_hat = m[j] / (1 - std::pow(beta1, t));
            p[j] -= lr * m_hat / (std::sqrt(v[j]) / std::sqrt(1 - std::pow(beta2, t)) + eps);
        }
        expect_close(ps.values[0].at(0), p[0]);
        expect_close(ps.values[0].at(1), p[1]);
        expect_close(ps.values[1].at(0), p[2]);
    }
    EXPECT_EQ(adam.steps(), 3);
    const auto state = adam.state();
    ASSERT_EQ(state.size(), 4u);
    EXPECT_EQ(state[0].name, "optimizer.w.exp_avg");
    EXPECT_EQ(state[1].name, "optimizer.w.exp_avg_sq");
    EXPECT_EQ(state[3].name, "optimizer.b.exp_avg_sq");
    expect_close(state[0].value->at(0), m[0]);
    expect_close(state[1].value->at(1), v[1]);
    expect_close(state[3].value->at(0), v[2]);
}

TEST(Adam, weight_decay_is_added_to_the_gradient_not_decoupled) {
    Params ps;
    ps.add("w", {1}, {3.0f});
    const double lr = 0.1, wd = 0.5;
    Adam adam(ps.parameters(), lr, 0.9, 0.999, 1e-8, wd);
    ps.set_grad(0, {0.0f});
    adam.step();
    // g = 0 + 0.5 * 3 = 1.5; first step: m_hat = g, v_hat = g^2: p -= lr * g / (|g| + eps)
    expect_close(ps.values[0].at(0), 3.0 - lr * 1.5 / (1.5 + 1e-8));
}

TEST(Optimizer, constructors_refuse_bad_arguments_naming_them) {
    Params ps;
    ps.add("w", {1}, {1.0f});
    const double nan = std::nan("");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), 0.0); }, "lr");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), -0.1); }, "lr");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), nan); }, "lr");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), 0.1, -0.5); }, "momentum");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), 0.1, nan); }, "momentum");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), 0.1, 0.9, -1e-4); }, "weight_decay");
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), 0.1, 0.0, 0.0, true); }, "nesterov");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 0.0); }, "lr");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), nan); }, "lr");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 1e-3, 1.0); }, "beta1");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 1e-3, -0.1); }, "beta1");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 1e-3, 0.9, 1.0); }, "beta2");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 1e-3, 0.9, nan); }, "beta2");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 1e-3, 0.9, 0.999, 0.0); }, "eps");
    expect_invalid_argument_naming([&] { Adam(ps.parameters(), 1e-3, 0.9, 0.999, 1e-8, -1.0); }, "weight_decay");
    SGD sgd(ps.parameters(), 0.1);
    expect_invalid_argument_naming([&] { sgd.set_lr(-1.0); }, "lr");
    expect_invalid_argument_naming([&] { sgd.set_lr(nan); }, "lr");
    EXPECT_EQ(sgd.lr(), 0.1);
    expect_invalid_argument_naming([&] { sgd.set_steps(-1); }, "steps");
}

TEST(Optimizer, refuses_duplicate_parameter_names_and_missing_grads) {
    Params ps;
    ps.add("w", {1}, {1.0f});
    ps.add("w", {1}, {1.0f});
    expect_invalid_argument_naming([&] { SGD(ps.parameters(), 0.1); }, "\"w\" appears twice");
    Tensor value({2});
    expect_invalid_argument_naming([&] { Adam({{"x", &value, nullptr}}, 0.1); }, "\"x\"");
}

TEST(Optimizer, step_refuses_a_grad_of_another_size_and_changes_nothing) {
    Params ps;
    ps.add("w", {2}, {1.0f, 2.0f});
    SGD sgd(ps.parameters(), 0.1);
    ps.grads[0].resize({3});
    EXPECT_THROW(sgd.step(), std::logic_error);
    EXPECT_EQ(ps.values[0].at(0), 1.0f);
    EXPECT_EQ(sgd.steps(), 0);
}

TEST(Optimizer, hyperparameters_round_trip_exactly_through_text) {
    Params ps;
    ps.add("w", {1}, {1.0f});
    SGD a(ps.parameters(), 0.1 / 3, 0.9, 1.0 / 7, true);
    SGD b(ps.parameters(), 1.0);
    b.set_hyperparameters(a.hyperparameters());
    EXPECT_EQ(b.lr(), a.lr());
    EXPECT_EQ(b.momentum(), a.momentum());
    EXPECT_EQ(b.weight_decay(), a.weight_decay());
    EXPECT_TRUE(b.nesterov());
    Adam c(ps.parameters(), 3e-4, 0.85, 0.9999, 1e-7, 1e-5);
    Adam d(ps.parameters(), 1.0);
    d.set_hyperparameters(c.hyperparameters());
    EXPECT_EQ(d.hyperparameters(), c.hyperparameters());
    EXPECT_EQ(d.beta2(), 0.9999);
    EXPECT_EQ(d.eps(), 1e-7);
}

TEST(Optimizer, set_hyperparameters_refuses_bad_text_and_changes_nothing) {
    Params ps;
    ps.add("w", {1}, {1.0f});
    SGD sgd(ps.parameters(), 0.5, 0.9);
    const auto good = sgd.hyperparameters();
    auto with = [&](const std::string& key, const std::string& value) {
        auto h = good;
        h[key] = value;
        return h;
    };
    auto without = [&](const std::string& key) {
        auto h = good;
        h.erase(key);
        return h;
    };
    const std::vector<std::pair<std::map<std::string, std::string>, std::string>> bad = {
        {with("lr", "abc"), "lr"},         {with("lr", "0.1x"), "lr"},          {with("lr", ""), "lr"},
        {with("lr", "-1"), "lr"},          {with("lr", "nan"), "lr"},           {with("momentum", "-0.5"), "momentum"},
        {with("nesterov", "1"), "nesterov"}, {with("dampening", "0"), "dampening"}, {without("weight_decay"), "weight_decay"},
    };
    for (const auto& [values, name] : bad) {
        expect_invalid_argument_naming([&] { sgd.check_hyperparameters(values); }, name);
        expect_invalid_argument_naming([&] { sgd.set_hyperparameters(values); }, name);
        EXPECT_EQ(sgd.hyperparameters(), good);
    }
    Adam adam(ps.parameters(), 0.1);
    auto h = adam.hyperparameters();
    h["beta1"] = "1";
    expect_invalid_argument_naming([&] { adam.set_hyperparameters(h); }, "beta1");
    EXPECT_EQ(adam.beta1(), 0.9);
}

TEST(StepLR, multiplies_by_gamma_every_step_size_steps) {
    StepLR schedule(0.1, 3, 0.5);
    const std::vector<double> expected = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125};
    for (size_t step = 0; step < expected.size(); ++step)
        EXPECT_DOUBLE_EQ(schedule.lr_at(static_cast<int64_t>(step)), expected[step]) << "step " << step;
    EXPECT_EQ(StepLR(1.0, 1, 0.1).lr_at(2), 1.0 * 0.1 * 0.1);  // repeated multiplication, as torch
}

TEST(CosineLR, follows_half_cosine_from_base_to_min_then_stays) {
    const double base = 0.1, min_lr = 0.01;
    CosineLR schedule(base, 8, min_lr);
    EXPECT_EQ(schedule.lr_at(0), base);
    EXPECT_NEAR(schedule.lr_at(4), (base + min_lr) / 2, 1e-15);
    EXPECT_NEAR(schedule.lr_at(2), min_lr + (base - min_lr) * (1 + std::cos(M_PI / 4)) / 2, 1e-15);
    EXPECT_NEAR(schedule.lr_at(8), min_lr, 1e-15);
    EXPECT_EQ(schedule.lr_at(9), min_lr);
    EXPECT_EQ(schedule.lr_at(1000000), min_lr);
    for (int64_t step = 1; step <= 8; ++step) EXPECT_LT(schedule.lr_at(step), schedule.lr_at(step - 1));
}

TEST(Schedules, refuse_bad_arguments_naming_them) {
    expect_invalid_argument_naming([] { StepLR(0.0, 3, 0.5); }, "lr");
    expect_invalid_argument_naming([] { StepLR(0.1, 0, 0.5); }, "step_size");
    expect_invalid_argument_naming([] { StepLR(0.1, 3, 0.0); }, "gamma");
    expect_invalid_argument_naming([] { StepLR(0.1, 3, std::nan("")); }, "gamma");
    expect_invalid_argument_naming([] { CosineLR(-1.0, 10); }, "lr");
    expect_invalid_argument_naming([] { CosineLR(0.1, 0); }, "total_steps");
    expect_invalid_argument_naming([] { CosineLR(0.1, 10, -0.01); }, "min_lr");
    expect_invalid_argument_naming([] { CosineLR(0.1, 10, 0.2); }, "min_lr");
    expect_invalid_argument_naming([] { StepLR(0.1, 3, 0.5).lr_at(-1); }, "step");
    expect_invalid_argument_naming([] { CosineLR(0.1, 10).lr_at(-1); }, "step");
}

// ---- trajectories for tests/nn/optim_parity.py ----------------------------------------------

nlohmann::json values_json(const Tensor& t) { return std::vector<float>(t.values().begin(), t.values().end()); }

nlohmann::json run_configuration(const nlohmann::json& config, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Params ps;
    ps.add("0.weight", {3, 2}, {});
    ps.add("0.bias", {3}, {});
    ps.add("1.weight", {1, 3}, {});
    nlohmann::json out = config;
    for (size_t i = 0; i < ps.values.size(); ++i) {
        for (float& v : ps.values[i].values()) v = normal(rng);
        out["params"].push_back({{"name", ps.names[i]}, {"shape", ps.values[i].shape()}, {"init", values_json(ps.values[i])}});
    }
    std::unique_ptr<Optimizer> optimizer;
    const double lr = config["lr"];
    if (config["kind"] == "SGD")
        optimizer = std::make_unique<SGD>(ps.parameters(), lr, config["momentum"], config["weight_decay"], config["nesterov"]);
    else
        optimizer = std::make_unique<Adam>(ps.parameters(), lr, config["beta1"], config["beta2"], config["eps"],
                                           config["weight_decay"]);
    for (int step = 0; step < 12; ++step) {
        const double step_lr = step < 6 ? lr : lr / 4;  // a schedule's change mid-run
        optimizer->set_lr(step_lr);
        nlohmann::json grads = nlohmann::json::array(), params = nlohmann::json::array();
        for (size_t i = 0; i < ps.grads.size(); ++i) {
            // Gradients of varied scale, one of them tiny (Adam's eps matters there).
            const float scale = i == 2 ? 1e-5f : (step % 3 == 0 ? 10.0f : 0.5f);
            for (float& g : ps.grads[i].values()) g = scale * normal(rng);
            grads.push_back(values_json(ps.grads[i]));
        }
        optimizer->step();
        for (const Tensor& v : ps.values) params.push_back(values_json(v));
        out["steps"].push_back({{"lr", step_lr}, {"grads", grads}, {"params_after", params}});
    }
    for (const OptimizerState& s : optimizer->state()) out["state"][s.name] = values_json(*s.value);
    return out;
}

int write_trajectory(const std::string& file) {
    nlohmann::json configs = nlohmann::json::array(
        {{{"kind", "SGD"}, {"lr", 0.1}, {"momentum", 0.0}, {"weight_decay", 0.0}, {"nesterov", false}},
         {{"kind", "SGD"}, {"lr", 0.05}, {"momentum", 0.9}, {"weight_decay", 1e-3}, {"nesterov", false}},
         {{"kind", "SGD"}, {"lr", 0.03}, {"momentum", 0.8}, {"weight_decay", 0.01}, {"nesterov", true}},
         {{"kind", "Adam"}, {"lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}},
         {{"kind", "Adam"}, {"lr", 0.01}, {"beta1", 0.8}, {"beta2", 0.99}, {"eps", 1e-6}, {"weight_decay", 0.1}}});
    nlohmann::json out;
    for (size_t i = 0; i < configs.size(); ++i) out["optimizers"].push_back(run_configuration(configs[i], 1000 + i));

    StepLR step_lr(0.1, 3, 0.5);
    CosineLR cosine(0.1, 17, 0.001), cosine_to_zero(0.05, 10);
    nlohmann::json values = nlohmann::json::array(), cosine_values = nlohmann::json::array(),
                   zero_values = nlohmann::json::array();
    for (int64_t s = 0; s <= 40; ++s) values.push_back(step_lr.lr_at(s));
    for (int64_t s = 0; s <= 17; ++s) cosine_values.push_back(cosine.lr_at(s));
    for (int64_t s = 0; s <= 10; ++s) zero_values.push_back(cosine_to_zero.lr_at(s));
    out["schedules"] = {
        {{"kind", "StepLR"}, {"base_lr", 0.1}, {"step_size", 3}, {"gamma", 0.5}, {"lr_at", values}},
        {{"kind", "CosineLR"}, {"base_lr", 0.1}, {"total_steps", 17}, {"min_lr", 0.001}, {"lr_at", cosine_values}},
        {{"kind", "CosineLR"}, {"base_lr", 0.05}, {"total_steps", 10}, {"min_lr", 0.0}, {"lr_at", zero_values}}};

    std::ofstream stream(file);
    stream << out.dump() << '\n';
    stream.close();
    if (!stream) {
        std::cerr << "nn_optim: cannot write " << file << '\n';
        return 1;
    }
    return 0;
}

}  // namespace
}  // namespace bnorm::nn

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--write-trajectory") return bnorm::nn::write_trajectory(argv[2]);
    testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
