#!/bin/bash
# ab.sh: A/B of two builds of libbnorm on bench_kernels' cases, for a kernel change.
#   bench/ab.sh OLD.so NEW.so THREADS FILTER [ROUNDS]
# Copy build-bench/libbnorm.so.0.1.0 aside before and after the change, then e.g.
#   bench/ab.sh /tmp/old.so /tmp/new.so 1 '256x1024/nc/f32/' 6
# Each round runs bench_kernels once per library (LD_PRELOAD; 3 repetitions of >= 0.05 s, median),
# in the order A B in odd rounds and B A in even ones: run in a fixed order, the first of the two
# was favoured by 10-20% on this project's noisy hosts. Prints, per case, each library's medians
# of all rounds, sorted. BENCH_KERNELS overrides the binary (default: build-bench/bench/bench_kernels).
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 OLD.so NEW.so THREADS FILTER [ROUNDS]" >&2
    exit 2
fi
a=$1 b=$2 threads=$3 filter=$4 rounds=${5:-4}
bk=${BENCH_KERNELS:-$(dirname "$0")/../build-bench/bench/bench_kernels}
for f in "$a" "$b" "$bk"; do
    [ -e "$f" ] || { echo "$0: $f: no such file" >&2; exit 2; }
done
case $rounds in '' | *[!0-9]* | 0*) echo "$0: ROUNDS must be a positive integer, not '$rounds'" >&2; exit 2 ;; esac
for r in $(seq "$rounds"); do
    order="A B"
    [ $((r % 2)) = 0 ] && order="B A"
    for v in $order; do
        lib=$a
        [ "$v" = B ] && lib=$b
        LD_PRELOAD=$lib "$bk" --threads="$threads" --benchmark_filter="$filter" --benchmark_repetitions=3 \
            --benchmark_min_time=0.05 --benchmark_report_aggregates_only=true 2>/dev/null |
            awk -v v="$v" '/_median/ { k = $1; sub("/real_time_median", "", k); print k, v, $2, $3 }'
    done
done | awk '{ key = $1 " " $2; t[key] = t[key] " " $3; unit[key] = $4 } END { for (k in t) print k, unit[k] ":" t[k] }' |
    sort | while read -r name lib unit times; do
        echo "$name $lib $unit $(echo "$times" | tr ' ' '\n' | sort -g | tr '\n' ' ')"
    done
