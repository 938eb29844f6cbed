// bench_onednn: oneDNN's batch normalization (C++ API, dnnl.hpp) on the same cases as
// bench_kernels, at the thread count given by --threads=T (oneDNN in Debian is built with OpenMP:
// bench/run.py also sets OMP_NUM_THREADS=T, one process per thread count).
//
// Per case: training forward = forward_training with use_scale | use_shift, writing y, mean and
// variance (oneDNN does not update running statistics; bnorm does); inference forward =
// forward_inference with use_global_stats; backward = prop_kind::backward with use_scale |
// use_shift (the shift flag is what makes it compute diff_shift = dbeta); backward in inference
// mode = the same with use_global_stats (running mean and variance as constants).
//
// Variants, as the tool part of the name: "onednn" runs in the user's layout (nchw, nhwc; (N, C)
// input as N x C x 1 x 1 nhwc, the same memory);
// for NCHW also "onednn-blocked+reorder" (nChw16c kernel plus the reorders from and to nchw, the
// cost a user with NCHW data pays) and "onednn-blocked" (the nChw16c kernel alone, inputs already
// blocked: not a fair plain-layout figure, reported for information).
//
// Before timing, each case is checked once against bnorm float32 on the same values; the scaled
// maximum difference is the counter "check_diff" (-1: not checked).
//
//   bench_onednn --threads=1 [--dtypes=f32,bf16,f16] [--quick] [--no-check] [--benchmark_* ...]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <unordered_map>

#include "bnorm_case.hpp"
#include "cases.hpp"

namespace {

using namespace bench;
using dnnl::memory;
using tag = memory::format_tag;

enum class Variant { plain, blocked_reorder, blocked };
const char* variant_name(Variant v) {
    return v == Variant::plain ? "onednn" : v == Variant::blocked_reorder ? "onednn-blocked+reorder" : "onednn-blocked";
}

dnnl::engine& engine() {
    static dnnl::engine e(dnnl::engine::kind::cpu, 0);
    return e;
}

memory::data_type dnnl_type(DType d) {
    return d == DType::f32 ? memory::data_type::f32 : d == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f16;
}

class OnednnCase {
public:
    OnednnCase(const Shape& s, Layout l, DType d, Op o, Variant v, bool check)
        : op_(o), reorder_(v == Variant::blocked_reorder), p_(s.c), mean_(s.c), var_(s.c), dscale_(s.c), dshift_(s.c) {
        // (N, C) input is described as N x C x 1 x 1 in nhwc, the same bytes: oneDNN then takes its
        // JIT kernel instead of the generic one that tag::nc gets (ncsp_bnorm; 256x1024 training
        // forward, one thread: 1.7 ms with tag::nc, 0.14 ms this way).
        const memory::dims dims{s.n, s.c, s.h, s.w};
        const tag user_tag = l == Layout::nchw ? tag::nchw : tag::nhwc;
        const memory::desc user_md(dims, dnnl_type(d), user_tag);
        const memory::desc kernel_md = v == Variant::plain ? user_md : memory::desc(dims, dnnl_type(d), tag::nChw16c);
        const memory::desc stat_md({s.c}, memory::data_type::f32, tag::x);
        dnnl::engine& eng = engine();

        x_ = Buffer(d, s.count());
        fill_x(x_, s, l);
        out_ = Buffer(d, s.count());
        if (is_backward(o)) {
            dy_ = Buffer(d, s.count());
            fill_dy(dy_);
        }
        using flags = dnnl::normalization_flags;
        const bool global = o == Op::fwd_infer || o == Op::bwd_infer;
        const flags f = flags::use_scale | flags::use_shift | (global ? flags::use_global_stats : flags::none);
        const float eps = static_cast<float>(kEps);
        const dnnl::prop_kind fwd_kind = o == Op::fwd_infer ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training;
        dnnl::batch_normalization_forward::primitive_desc fpd(
            dnnl::batch_normalization_forward::desc(fwd_kind, kernel_md, eps, f), eng);
        impl_ = fpd.impl_info_str();

        m_x_ = memory(user_md, eng, x_.data());
        m_out_ = memory(user_md, eng, out_.data());
        k_x_ = v == Variant::plain ? m_x_ : memory(kernel_md, eng);
        k_out_ = v == Variant::plain ? m_out_ : memory(kernel_md, eng);
        m_scale_ = memory(stat_md, eng, p_.gamma.data());
        m_shift_ = memory(stat_md, eng, p_.beta.data());
        // Inference (forward and backward) reads the running statistics; training writes the batch's.
        m_mean_ = memory(stat_md, eng, global ? p_.running_mean.data() : mean_.data());
        m_var_ = memory(stat_md, eng, global ? p_.running_var.data() : var_.data());
        dnnl::stream& st = stream();
        if (v != Variant::plain) dnnl::reorder(m_x_, k_x_).execute(st, m_x_, k_x_);

        fwd_ = dnnl::batch_normalization_forward(fpd);
        fwd_args_ = {{DNNL_ARG_SRC, k_x_}, {DNNL_ARG_MEAN, m_mean_}, {DNNL_ARG_VARIANCE, m_var_},
                     {DNNL_ARG_SCALE, m_scale_}, {DNNL_ARG_SHIFT, m_shift_}};
        if (!is_backward(o)) {
            fwd_args_[DNNL_ARG_DST] = k_out_;
        } else {
            // The backward's hint; for the training backward, one forward produces mean and variance.
            m_dy_ = memory(user_md, eng, dy_.data());
            k_dy_ = v == Variant::plain ? m_dy_ : memory(kernel_md, eng);
            if (v != Variant::plain) dnnl::reorder(m_dy_, k_dy_).execute(st, m_dy_, k_dy_);
            if (o == Op::backward) {
                memory scratch_y(kernel_md, eng);
                fwd_args_[DNNL_ARG_DST] = scratch_y;
                fwd_.execute(st, fwd_args_);
                st.wait();
            }
            dnnl::batch_normalization_backward::primitive_desc bpd(
                dnnl::batch_normalization_backward::desc(dnnl::prop_kind::backward, kernel_md, kernel_md, eps, f), eng, fpd);
            impl_ = bpd.impl_info_str();
            m_dscale_ = memory(stat_md, eng, dscale_.data());
            m_dshift_ = memory(stat_md, eng, dshift_.data());
            bwd_ = dnnl::batch_normalization_backward(bpd);
            bwd_args_ = {{DNNL_ARG_SRC, k_x_},          {DNNL_ARG_DIFF_DST, k_dy_},       {DNNL_ARG_MEAN, m_mean_},
                         {DNNL_ARG_VARIANCE, m_var_},   {DNNL_ARG_SCALE, m_scale_},       {DNNL_ARG_SHIFT, m_shift_},
                         {DNNL_ARG_DIFF_SRC, k_out_},
                         {DNNL_ARG_DIFF_SCALE, m_dscale_}, {DNNL_ARG_DIFF_SHIFT, m_dshift_}};
        }
        if (reorder_) {
            in_x_ = dnnl::reorder(m_x_, k_x_);
            if (is_backward(o)) in_dy_ = dnnl::reorder(m_dy_, k_dy_);
            out_reorder_ = dnnl::reorder(k_out_, m_out_);
        }
        run();  // warm-up
        if (v != Variant::plain && !reorder_) out_reorder_ = dnnl::reorder(k_out_, m_out_);
        if (check) check_diff_ = check_against_bnorm(s, l, d, o, v);
    }

    void run() {
        dnnl::stream& st = stream();
        if (reorder_) {
            in_x_.execute(st, m_x_, k_x_);
            if (is_backward(op_)) in_dy_.execute(st, m_dy_, k_dy_);
        }
        if (is_backward(op_))
            bwd_.execute(st, bwd_args_);
        else
            fwd_.execute(st, fwd_args_);
        if (reorder_) out_reorder_.execute(st, k_out_, m_out_);
        st.wait();
    }

    const std::string& impl() const { return impl_; }
    double check_diff() const { return check_diff_; }

private:
    static dnnl::stream& stream() {
        static dnnl::stream s(engine());
        return s;
    }

    // bnorm float32 on the same values (bf16/f16 inputs converted exactly) against oneDNN's output.
    double check_against_bnorm(const Shape& s, Layout l, DType d, Op o, Variant v) {
        if (v == Variant::blocked) {  // the output is blocked: bring it back to the user's layout
            out_reorder_.execute(stream(), k_out_, m_out_);
            stream().wait();
        }
        BnormCase ref(s, l, o, DType::f32, d);
        if (ref.status() != BNORM_OK) return -1;
        double diff = scaled_max_diff(out_.count(), [&](int64_t i) { return out_.get(i); },
                                      [&](int64_t i) { return ref.out().get(i); });
        if (is_backward(o)) {
            diff = std::fmax(diff, scaled_max_diff(s.c, [&](int64_t i) { return dscale_[i]; },
                                                   [&](int64_t i) { return ref.dgamma()[i]; }));
            diff = std::fmax(diff, scaled_max_diff(s.c, [&](int64_t i) { return dshift_[i]; },
                                                   [&](int64_t i) { return ref.dbeta()[i]; }));
        }
        return diff;
    }

    Op op_;
    bool reorder_;
    Params p_;
    std::vector<float> mean_, var_, dscale_, dshift_;
    Buffer x_, dy_, out_;
    memory m_x_, m_dy_, m_out_, k_x_, k_dy_, k_out_, m_scale_, m_shift_, m_mean_, m_var_, m_dscale_, m_dshift_;
    dnnl::batch_normalization_forward fwd_;
    dnnl::batch_normalization_backward bwd_;
    dnnl::reorder in_x_, in_dy_, out_reorder_;
    std::unordered_map<int, memory> fwd_args_, bwd_args_;
    std::string impl_;
    double check_diff_ = -1;
};

void run_case(benchmark::State& st, Shape s, Layout l, DType d, Op o, Variant v, bool check) {
    OnednnCase* c = nullptr;
    std::string error;
    try {
        c = &cached<OnednnCase>(case_name(variant_name(v), s, l, d, o, 0),
                                [&] { return std::make_unique<OnednnCase>(s, l, d, o, v, check); });
    } catch (const dnnl::error& e) {
        error = std::string(e.status == dnnl_unimplemented ? "unsupported: " : "error: ") + e.what();
    }
    if (!c) {
        st.SkipWithError(error.c_str());
        return;
    }
    for (auto _ : st) c->run();
    st.SetBytesProcessed(st.iterations() * bytes_moved(s, d, o));
    st.counters["check_diff"] = c->check_diff();
    st.SetLabel(c->impl());
}

}  // namespace

int main(int argc, char** argv) {
    return bench_main(argc, argv, [](const Filters& f) {
        omp_set_num_threads(f.threads);
        for_each_case(f, [&](Shape s, Layout l, DType d, Op o) {
            for (Variant v : {Variant::plain, Variant::blocked_reorder, Variant::blocked})
                if (v == Variant::plain || l == Layout::nchw)
                    register_case(case_name(variant_name(v), s, l, d, o, f.threads),
                                  [=](benchmark::State& st) { run_case(st, s, l, d, o, v, f.check); });
        });
        const dnnl_version_t* ver = dnnl_version();
        benchmark::AddCustomContext("onednn_version", std::to_string(ver->major) + "." + std::to_string(ver->minor) +
                                                          "." + std::to_string(ver->patch) +
                                                          (ver->cpu_runtime == DNNL_RUNTIME_OMP ? " (OpenMP)" : ""));
    });
}
