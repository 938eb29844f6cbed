#!/bin/bash
# ab.sh: A/B of two builds of libbnorm on bench_kernels' cases, for a kernel change.
#   bench/ab.sh OLD.so NEW.so THREADS FILTER [ROUNDS]      (ROUNDS: default 4; use an even number)
# Copy build-bench/libbnorm.so.0.1.0 aside before and after the change, then e.g.
#   bench/ab.sh /tmp/old.so /tmp/new.so 1 '256x1024/nc/f32/' 6
# Each round runs bench_kernels once per library (LD_PRELOAD; 3 repetitions of >= 0.05 s, median),
# in the order A B in odd rounds and B A in even ones: run in a fixed order, the first of the two
# was favoured by 10-20% on this project's noisy hosts. Prints, per case and library, the medians
# of all rounds in milliseconds, sorted. BENCH_KERNELS overrides the binary (default:
# build-bench/bench/bench_kernels).
set -euo pipefail
usage() {
    echo "usage: $0 OLD.so NEW.so THREADS FILTER [ROUNDS]" >&2
    exit 2
}
if [ $# -lt 4 ] || [ $# -gt 5 ]; then usage; fi
threads=$3 filter=$4 rounds=${5:-4}
bk=${BENCH_KERNELS:-$(dirname "$0")/../build-bench/bench/bench_kernels}
[ -x "$bk" ] || { echo "$0: $bk: no bench_kernels binary (build build-bench first)" >&2; exit 2; }
for n in "$threads" "$rounds"; do
    case $n in '' | *[!0-9]* | 0*) echo "$0: THREADS and ROUNDS must be positive integers, not '$n'" >&2; exit 2 ;; esac
done
err=$(mktemp)
trap 'rm -f "$err"' EXIT
libs=()
for f in "$1" "$2"; do
    # An absolute path: a bare name would be searched in the loader's path, not here.
    lib=$(realpath -e -- "$f" 2>/dev/null) || { echo "$0: $f: no such file" >&2; exit 2; }
    # The loader only warns (and runs without it) when a library cannot be preloaded.
    if LD_PRELOAD=$lib /bin/true 2>&1 | grep -q .; then
        echo "$0: $f cannot be preloaded:" >&2
        LD_PRELOAD=$lib /bin/true
        exit 2
    fi
    libs+=("$lib")
done
medians=$(for r in $(seq "$rounds"); do
    order="A B"
    [ $((r % 2)) = 0 ] && order="B A"
    for v in $order; do
        lib=${libs[0]}
        [ "$v" = B ] && lib=${libs[1]}
        # CSV: name,iterations,real_time,cpu_time,time_unit,... with the times unrounded. Its
        # context lines go to stderr: kept only when the run fails.
        if ! out=$(LD_PRELOAD=$lib "$bk" --threads="$threads" --benchmark_filter="$filter" \
            --benchmark_repetitions=3 --benchmark_min_time=0.05 --benchmark_report_aggregates_only=true \
            --benchmark_format=csv 2>"$err"); then
            cat "$err" >&2
            echo "$0: bench_kernels failed with $lib" >&2
            exit 1
        fi
        awk -F, -v v="$v" '$1 ~ /_median"$/ {
            k = $1; gsub("\"", "", k); sub("/real_time_median$", "", k)
            ms = $3 * ($5 == "ns" ? 1e-6 : $5 == "us" ? 1e-3 : $5 == "s" ? 1e3 : 1)
            printf "%s %s %.4g\n", k, v, ms }' <<<"$out"
    done
done)
if [ -z "$medians" ]; then
    echo "$0: no case of bench_kernels matches '$filter' (see bench_kernels --benchmark_list_tests)" >&2
    exit 1
fi
awk '{ key = $1 " " $2; t[key] = t[key] " " $3 } END { for (k in t) print k, t[k] }' <<<"$medians" |
    sort | while read -r name lib times; do
        echo "$name $lib ms: $(echo "$times" | tr ' ' '\n' | sort -g | tr '\n' ' ')"
    done
