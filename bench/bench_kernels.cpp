// bench_kernels: libbnorm's kernels (C ABI) on issue 5's shapes, layouts, operations and dtypes,
// at the thread count given by --threads=T (bnorm_set_num_threads). Google Benchmark; GB/s from
// the bytes counted in cases.hpp. A dtype that this build does not serve is reported as an error
// "unsupported: ..." (bench/run.py prints "n/a (unsupported)"), never a crash.
//
//   bench_kernels --threads=1 [--dtypes=f32,bf16,f16] [--quick] [--benchmark_format=json ...]
#include <benchmark/benchmark.h>
#include <bnorm/bnorm.h>

#include "bnorm_case.hpp"
#include "cases.hpp"

namespace {

using namespace bench;

void run_case(benchmark::State& st, Shape s, Layout l, DType d, Op o) {
    BnormCase& c = cached<BnormCase>(case_name("bnorm", s, l, d, o, 0),
                                     [&] { return std::make_unique<BnormCase>(s, l, o, d, d); });
    if (c.status() != BNORM_OK) {
        st.SkipWithError(unsupported_message(c.status(), c.error()).c_str());
        return;
    }
    for (auto _ : st) {
        const bnorm_status r = c.run();
        benchmark::DoNotOptimize(r);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(st.iterations() * bytes_moved(s, d, o));
}

}  // namespace

int main(int argc, char** argv) {
    return bench_main(argc, argv, [](const Filters& f) {
        bnorm_set_num_threads(f.threads);
        for_each_case(f, [&](Shape s, Layout l, DType d, Op o) {
            register_case(case_name("bnorm", s, l, d, o, f.threads), [=](benchmark::State& st) { run_case(st, s, l, d, o); });
        });
        benchmark::AddCustomContext("bnorm_version", bnorm_version());
    });
}
