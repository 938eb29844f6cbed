#!/usr/bin/python3
"""bnorm's kernels against STREAM copy, PyTorch and oneDNN in one run (issue 5), one table.

    /usr/bin/python3 bench/run.py --build build-bench [--markdown docs/bench-table.md]
                                  [--quick | --smoke] [--threads 1,2] [--dtypes f32,bf16,f16] [--rounds 3]
                                  [--shapes 32x64x112x112,...] [--layouts nchw,nhwc,nc]

Builds nothing: --build is a build folder configured with -DBNORM_BUILD_BENCH=ON (scripts/bench
does both). The machine's bandwidth drifts (15-24 GB/s on one thread within an hour here), so the
tools are interleaved case by case: for each thread count, for each (shape, layout, dtype) group,
  1. bench/stream_copy (STREAM copy, non-temporal stores, read + write bytes); it runs again after
     the group, and the group's rows are held against the higher of the two figures;
  2. bench/bench_kernels (bnorm, C ABI) and 3. bench/bench_onednn (oneDNN) on the group's four
     operations, a process each (OMP_NUM_THREADS and --threads, --benchmark_filter), Google
     Benchmark JSON, median of the repetitions;
  4. PyTorch in this process (torch.set_num_threads; aten.native_batch_norm and
     native_batch_norm_backward, the kernels under torch.batch_norm), median of the repeats, after
     a warm-up call;
  5. bench/bare_patterns: each operation's memory traffic moved with no arithmetic, in each order
     an implementation can take (one pass; two passes; channel by channel), with streamed and with
     ordinary stores; the fastest is the row's "bare" time. A row that misses its target says
     whether the bare pattern misses it too: if so, moving the bytes alone in that order is too slow
     for the target on this machine.
All of it --rounds times (default 3), the groups in the same order each time: a row's times and
its STREAM figure are the medians over the rounds (minutes apart, so that one slow stretch of the
machine moves a row less). Debian's torch 1.13 has no CPU kernel for the out= variants, so outputs are
     allocated per call: this script re-runs itself under tcmalloc (LD_PRELOAD, Debian
     libgoogle-perftools4), whose page heap reuses freed blocks, so that PyTorch's times are not
     dominated by fresh pages from mmap. The table header says which allocator was used.
Correctness first: once per case, PyTorch's output and bnorm's (in this process, libbnorm.so via
ctypes) are compared with bnorm float32 on the same values; bench_onednn does the same for oneDNN.
The check column is the largest scaled difference max|a-b|/(1+max|b|); a failed check marks the row.

GB/s counts 2*|x| bytes for a forward pass and 3*|x| for a backward pass (|x| in bytes of the
element type); % of STREAM is against the copy bandwidth at the same thread count. A ratio is
peer time / bnorm time (> 1: bnorm faster). Timings are never asserted.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"
SHAPES = [(32, 64, 112, 112), (64, 256, 14, 14), (8, 32, 256, 256), (256, 1024, 1, 1), (60, 100, 1, 1)]
QUICK_SHAPES = [(64, 256, 14, 14), (60, 100, 1, 1)]
OPS = ["fwd-train", "backward", "fwd-infer", "bwd-infer"]
ELEMENT_SIZE = {"f32": 4, "bf16": 2, "f16": 2}
BNORM_DTYPE = {"f32": 0, "bf16": 2, "f16": 3}
# On the scaled difference. float32: PyTorch and oneDNN accumulate NHWC statistics in float and
# differ from the float64 result by up to ~1e-4 on 401k values per channel (bnorm: ~1e-7).
TOLERANCE = {"f32": 5e-4, "bf16": 3e-2, "f16": 5e-3}
EPS, MOMENTUM = 1e-5, 0.1


def shape_name(s):
    return "x".join(map(str, s[:2] if s[2:] == (1, 1) else s))


def selected_shapes(args):
    shapes = [(60, 100, 1, 1)] if args.smoke else QUICK_SHAPES if args.quick else SHAPES
    return [s for s in shapes if not args.shapes or shape_name(s) in args.shapes]


def layouts_of(s, args=None):
    layouts = ["nc"] if s[2:] == (1, 1) else ["nchw", "nhwc"]
    return [lay for lay in layouts if args is None or not args.layouts or lay in args.layouts]


def count(s):
    return s[0] * s[1] * s[2] * s[3]


def bytes_moved(s, dtype, op):
    return (3 if op.startswith("b") else 2) * count(s) * ELEMENT_SIZE[dtype]


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine():
    info = {}
    for line in sh(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    caches = ", ".join(f"{k} {info[k]}" for k in ("L1d cache", "L2 cache", "L3 cache") if k in info)
    return f"{info.get('Model name', platform.processor())}, {os.cpu_count()} CPUs ({caches})"


class ForeignLoad:
    """CPU time that other processes used while a phase ran, in cores (/proc/stat busy and steal
    time minus this process's and its children's). On a shared 2-core machine a build on the other
    core stalls every 2-thread OpenMP barrier: a phase with a high figure has unreliable times."""

    @staticmethod
    def _sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()

    def __init__(self, wait_quiet=0.0):
        self.phases, self.wait_quiet, self.waited = [], wait_quiet, 0.0

    def _wait(self):
        """Waits, up to wait_quiet seconds, for a second in which other processes use < 0.2 cores."""
        deadline = time.monotonic() + self.wait_quiet
        while time.monotonic() < deadline:
            b0, o0, w0 = self._sample()
            time.sleep(1.0)
            b1, o1, w1 = self._sample()
            if max(0.0, (b1 - b0) - (o1 - o0)) / (w1 - w0) < 0.2:
                break
            self.waited += w1 - w0

    def measure(self, kind, group, fn, *a):
        """Runs fn(*a) as a phase of this kind ("bnorm", "STREAM", ...) for this group of cases."""
        self._wait()
        b0, o0, w0 = self._sample()
        r = fn(*a)
        b1, o1, w1 = self._sample()
        self.phases.append((kind, group, max(0.0, (b1 - b0) - (o1 - o0)), max(w1 - w0, 1e-9)))
        return r

    def _load(self, phases):
        """Other processes' CPU time over the wall time of these phases, in cores. /proc/stat counts
        in ticks (10 ms), so phases shorter than a second in all are not judged (0)."""
        busy, wall = sum(p[2] for p in phases), sum(p[3] for p in phases)
        return busy / wall if wall >= 1.0 else 0.0

    def disturbed(self, group, threads):
        """True when the group's phases would have needed more cores than were free: this run's
        threads plus the other processes' load above the machine's cores (a quarter core of slack)."""
        load = self._load([p for p in self.phases if p[1] == group])
        return threads + load > (os.cpu_count() or 1) + 0.25

    def summary(self):
        """The load over all phases of each kind, and the highest of any group."""
        kinds = {}
        for p in self.phases:
            kinds.setdefault(p[0], []).append(p)
        groups = {p[1] for p in self.phases if p[1] is not None}
        worst = max((self._load([p for p in self.phases if p[1] == g]) for g in groups), default=0.0)
        return ", ".join(f"{k} {self._load(v):.2f}" for k, v in kinds.items()) + f"; highest group {worst:.2f}"


# ---- the C++ binaries --------------------------------------------------------------------------
def child_env(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), BNORM_NUM_THREADS=str(threads))
    env.pop("LD_PRELOAD", None)  # tcmalloc is for PyTorch; the binaries preallocate
    return env


def run_json(cmd, threads):
    """Runs one of the C/C++ binaries at this thread count and returns its JSON output; exits with its
    error output when it fails."""
    print("  " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads))
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def run_gbench(binary, threads, args, extra, dtypes=None):
    cmd = [binary, f"--threads={threads}", f"--dtypes={','.join(dtypes or args.dtypes)}", "--benchmark_format=json",
           f"--benchmark_repetitions={args.repeats}", "--benchmark_report_aggregates_only=true",
           f"--benchmark_min_time={args.min_time}"] + extra
    if args.quick:
        cmd.append("--quick")
    doc = run_json(cmd, threads)
    results = {}  # name without "/real_time" -> {"ms", "error", "check", "impl"}
    for b in doc["benchmarks"]:
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        if b.get("error_occurred"):
            results[name] = {"error": b.get("error_message", "error")}
        elif b.get("aggregate_name") == "median" or (b.get("run_type") == "iteration" and name not in results):
            results[name] = {"ms": b["real_time"], "check": b.get("check_diff"), "impl": b.get("label", "")}
    return results, doc.get("context", {})


def bare(build, args, s, layout, dtype, threads):
    """bench/bare_patterns on one group: {"bare/<group>/<op>/t<threads>": {"ms", "order", "stores"} | {"error"}}."""
    g = f"{shape_name(s)}/{layout}/{dtype}"
    cmd = [os.path.join(build, "bench", "bare_patterns"), shape_name(s), layout, str(ELEMENT_SIZE[dtype]),
           str(threads), str(args.repeats), str(args.min_time)]
    doc = run_json(cmd, threads)
    if "error" in doc:
        return {f"bare/{g}/{op}/t{threads}": {"error": doc["error"]} for op in OPS}
    return {f"bare/{g}/{op}/t{threads}": dict(doc["ops"][op]) for op in OPS}


def stream(build, args, threads):
    mb, reps = (400, 7) if not (args.quick or args.smoke) else (200, 5)
    cmd = [os.path.join(build, "bench", "stream_copy"), str(mb), str(reps)] + [str(t) for t in threads]
    doc = run_json(cmd, 1)
    return {r["threads"]: r["gbps"] for r in doc["results"]}, doc


# ---- bnorm through ctypes (the reference of the checks) -----------------------------------------
class Desc(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("layout", ctypes.c_int), ("n", ctypes.c_int64),
                ("c", ctypes.c_int64), ("spatial", ctypes.c_int64)]


class Options(ctypes.Structure):
    _fields_ = [("eps", ctypes.c_double), ("momentum", ctypes.c_double), ("running_var_unbiased", ctypes.c_int)]


def params(torch, c):  # the formulas of bench/cases.hpp's Params
    k = torch.arange(c)
    return (1 + 0.1 * (k % 5)).float(), (0.1 * (k % 3)).float(), (0.1 * (k % 4) - 0.5).float(), (1 + 0.05 * (k % 6)).float()


def bnorm_op(lib, torch, dtype_code, layout, op, x, dy, p):
    """Runs one op in bnorm on torch tensors; returns (status, [outputs])."""
    P = lambda t: ctypes.c_void_p(t.data_ptr()) if t is not None else None
    n, c = x.shape[0], x.shape[1]
    d = Desc(dtype_code, 1 if layout == "nhwc" else 0, n, c, x.numel() // (n * c))
    o = Options(EPS, MOMENTUM, 1)
    g, b, rm, rv = (t.clone() for t in p)
    out, sm, si, dg, db = torch.empty_like(x), *(torch.empty(c) for _ in range(4))
    if op in ("fwd-train", "backward"):
        st = lib.bnorm_forward_training(ctypes.byref(d), ctypes.byref(o), P(x), P(g), P(b), P(rm), P(rv), None,
                                        P(out), P(sm), P(si))
        if st or op == "fwd-train":
            return st, [out]
        st = lib.bnorm_backward(ctypes.byref(d), P(dy), P(x), P(g), P(sm), P(si), P(out), P(dg), P(db))
    elif op == "fwd-infer":
        return lib.bnorm_forward_inference(ctypes.byref(d), ctypes.byref(o), P(x), P(g), P(b), P(rm), P(rv), P(out)), [out]
    else:
        st = lib.bnorm_backward_inference(ctypes.byref(d), ctypes.byref(o), P(dy), P(x), P(g), P(rm), P(rv), P(out),
                                          P(dg), P(db))
    return st, [out, dg, db]


def scaled_diff(outs, refs):
    worst = 0.0
    for a, b in zip(outs, refs):
        a, b = a.float(), b.float()
        worst = max(worst, float((a - b).abs().max()) / (1.0 + float(b.abs().max())))
    return worst


# ---- PyTorch ------------------------------------------------------------------------------------
class TorchCases:
    """PyTorch on one (shape, layout, dtype) group at one thread count at a time:
    {(shape, layout, dtype, op, threads): {"ms" | "error", "check", "bnorm_check"}}. Inputs are
    made once per (shape, layout) and the checks run once per case (on the first call)."""

    def __init__(self, torch, lib, args):
        self.torch, self.lib, self.args = torch, lib, args
        self.inputs_key, self.inputs = None, None
        self.checks = {}  # (shape, layout, dtype, op) -> (check, bnorm_check) or an error text

    def _inputs(self, s, layout):
        torch = self.torch
        if self.inputs_key != (s, layout):
            self.inputs = None  # free the previous group's tensors first
            n, c, h, w = s
            torch.manual_seed(0)
            shape = (n, c) if layout == "nc" else (n, c, h, w)
            offs = (0.5 * (torch.arange(c) % 7) - 1.5).view((1, c) + (1,) * (len(shape) - 2))
            x32 = torch.randn(shape) + offs
            dy32 = torch.randn(shape)
            if layout == "nhwc":
                x32 = x32.contiguous(memory_format=torch.channels_last)
                dy32 = dy32.contiguous(memory_format=torch.channels_last)
            self.inputs_key, self.inputs = (s, layout), (x32, dy32)
        return self.inputs

    def run(self, s, layout, dtype, threads):
        torch, lib, args = self.torch, self.lib, self.args
        aten = torch.ops.aten
        res = {}
        x32, dy32 = self._inputs(s, layout)
        tdt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
        x, dy = x32.to(tdt), dy32.to(tdt)
        xr, dyr = x.float(), dy.float()  # the same values in float32 (exact)
        p = params(torch, s[1])
        torch.set_num_threads(threads)
        lib.bnorm_set_num_threads(threads)
        for op in OPS:
            key = (s, layout, dtype, op)
            g, b, rm, rv = (t.clone() for t in p)
            saved = []  # the training backward's saved statistics, from one forward
            calls = {
                "fwd-train": lambda: aten.native_batch_norm(x, g, b, rm, rv, True, MOMENTUM, EPS),
                "fwd-infer": lambda: aten.native_batch_norm(x, g, b, rm, rv, False, MOMENTUM, EPS),
                "backward": lambda: aten.native_batch_norm_backward(dy, x, g, rm, rv, *saved, True, EPS, [True] * 3),
                "bwd-infer": lambda: aten.native_batch_norm_backward(dy, x, g, rm, rv, None, None, False, EPS, [True] * 3),
            }
            fn = calls[op]
            try:
                if op == "backward":
                    saved = aten.native_batch_norm(x, g, b, rm.clone(), rv.clone(), True, MOMENTUM, EPS)[1:]
                first = fn()  # the check on the first call; at later thread counts, the warm-up
            except RuntimeError as e:
                if key not in self.checks:
                    self.checks[key] = (None, self._bnorm_check(s, layout, dtype, op, x, dy, xr, dyr, p))
                res[key + (threads,)] = {"error": "unsupported: " + str(e).splitlines()[0],
                                         "bnorm_check": self.checks[key][1]}
                continue
            if key not in self.checks:
                ref = bnorm_op(lib, torch, 0, layout, op, xr, dyr, p)[1]
                outs = [first[0]] if op.startswith("fwd") else list(first)
                self.checks[key] = (scaled_diff(outs, ref), self._bnorm_check(s, layout, dtype, op, x, dy, xr, dyr, p, ref))
                del outs, ref
            del first
            fn()  # warm-up at this thread count
            t0 = time.perf_counter()
            fn()
            one = time.perf_counter() - t0
            iters = max(1, min(10000, int(args.min_time / max(one, 1e-7))))
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn()
                times.append((time.perf_counter() - t0) * 1e3 / iters)
            check, bn_check = self.checks[key]
            res[key + (threads,)] = {"ms": statistics.median(times), "check": check, "bnorm_check": bn_check}
        return res

    def _bnorm_check(self, s, layout, dtype, op, x, dy, xr, dyr, p, ref=None):
        """bnorm's own low-precision kernels against bnorm float32, where this build has them."""
        if dtype == "f32":
            return None
        if ref is None:
            ref = bnorm_op(self.lib, self.torch, 0, layout, op, xr, dyr, p)[1]
        st, outs = bnorm_op(self.lib, self.torch, BNORM_DTYPE[dtype], layout, op, x, dy, p)
        return scaled_diff(outs, ref) if st == 0 else None


def merge_rounds(results):
    """One result per case from the rounds' results: the first round's, with "ms" the median of the
    rounds that timed it (their times kept as "rounds_ms")."""
    out = {}
    for key, first in results[0].items():
        times = [r[key]["ms"] for r in results if "ms" in r.get(key, {})]
        merged = dict(first)
        if times:
            merged["ms"], merged["rounds_ms"] = statistics.median(times), times
        out[key] = merged
    return out


# ---- the table ----------------------------------------------------------------------------------
def target(op, layout, small, pct, best_ratio):
    """(met, text): issue 5's targets for this row."""
    need = []
    if small:
        goal_pct, goal_ratio = None, 1.0
    elif op == "fwd-train":
        goal_pct, goal_ratio = 50, (3.0 if layout == "nchw" else 1.0)
    elif op == "backward":
        goal_pct, goal_ratio = 50, 1.3
    else:
        goal_pct, goal_ratio = 90, 1.0
    if goal_pct is not None and pct < goal_pct:
        need.append(f"{pct:.0f}%<{goal_pct}%")
    if best_ratio is not None and best_ratio < goal_ratio:
        need.append(f"{best_ratio:.2f}x<{goal_ratio:g}x")
    return (not need), ("yes" if not need else "NO " + ", ".join(need))


def target_as_written(op, layout, small, dtype, pct, best_ratio):
    """Whether the row meets issue 5's targets as its text states them, or None where it states none.
    The table's `target` column (target above) is stricter: the issue's table of targets is headed
    "float32", and for bfloat16 and float16 it asks "the same bandwidth targets, counting 2-byte
    elements" (no ratio to the peers, nothing for the cache-resident (N, C) shapes); and it asks
    training forward for a ratio on NCHW only."""
    if dtype != "f32" and small:
        return None
    if dtype != "f32" or (op == "fwd-train" and layout != "nchw" and not small):
        best_ratio = None  # the bandwidth target alone
    return target(op, layout, small, pct, best_ratio)[0]


def write_atomically(path, text):
    """Writes text to path through a temporary file in the same folder and a rename: an interrupted
    run leaves the previous results whole."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fmt_ms(v):
    return f"{v:.3f}" if v >= 0.01 else f"{v:.4f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="build folder configured with -DBNORM_BUILD_BENCH=ON")
    ap.add_argument("--markdown", help="also write the table as markdown to this file")
    ap.add_argument("--json", help="also write every raw result as JSON to this file")
    ap.add_argument("--quick", action="store_true", help="shapes 64x256x14x14 and 60x100, 3 repeats")
    ap.add_argument("--smoke", action="store_true", help="60x100 only, 1 repeat, tiny times (the CTest smoke test)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dtypes", default="f32,bf16,f16")
    ap.add_argument("--shapes", default="",
                    help="only these of the shapes, e.g. 32x64x112x112,8x32x256x256 (default: all; a re-run of "
                         "some rows, whose table then counts only them)")
    ap.add_argument("--layouts", default="", help="only these layouts: nchw, nhwc, nc (default: all)")
    ap.add_argument("--repeats", type=int, help="repetitions per tool and case in each round (default 3; --quick 3, "
                                                 "--smoke 1)")
    ap.add_argument("--rounds", type=int,
                    help="passes over all groups; each time in the table is the median of its rounds' medians, "
                         "each STREAM figure the median of its rounds' (default 3; --quick and --smoke 1)")
    ap.add_argument("--min-time", type=float, help="seconds per repetition (default 0.05)")
    ap.add_argument("--wait-quiet", type=float,
                    help="before each phase, wait up to this many seconds for the other processes to go quiet "
                         "(default 10, --quick 5, --smoke 0)")
    ap.add_argument("--no-tcmalloc", action="store_true", help="keep glibc malloc for PyTorch")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if any(d not in ELEMENT_SIZE for d in args.dtypes):
        sys.exit("--dtypes: f32, bf16, f16")
    args.shapes = [x for x in args.shapes.split(",") if x]
    known = [shape_name(s) for s in SHAPES]
    if any(x not in known for x in args.shapes):
        sys.exit(f"--shapes: a comma-separated list of {', '.join(known)}")
    args.layouts = [x for x in args.layouts.split(",") if x]
    if any(x not in ("nchw", "nhwc", "nc") for x in args.layouts):
        sys.exit("--layouts: a comma-separated list of nchw, nhwc, nc")
    if not selected_shapes(args) or not any(layouts_of(s, args) for s in selected_shapes(args)):
        sys.exit("--shapes/--layouts/--quick/--smoke: no case left to run")
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 3
    if args.rounds is None:
        args.rounds = 1 if args.smoke or args.quick else 3
    if args.rounds < 1 or args.repeats < 1:
        sys.exit("--rounds and --repeats: at least 1")
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.smoke else 5.0 if args.quick else 10.0
    if args.min_time is None:
        args.min_time = 0.001 if args.smoke else 0.05

    allocator = "glibc malloc (outputs allocated per call)"
    if not args.no_tcmalloc:
        if TCMALLOC not in os.environ.get("LD_PRELOAD", ""):
            if os.path.exists(TCMALLOC):
                env = dict(os.environ, LD_PRELOAD=TCMALLOC, TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=str(1 << 40))
                os.execve(sys.executable, [sys.executable] + sys.argv, env)
            print(f"warning: {TCMALLOC} missing (Debian libgoogle-perftools4): PyTorch runs with glibc malloc",
                  file=sys.stderr)
        else:
            allocator = "tcmalloc (LD_PRELOAD libtcmalloc.so.4; outputs allocated per call, blocks reused)"

    import torch  # after the re-exec, so that tcmalloc is its allocator

    build = os.path.abspath(args.build)
    lib = ctypes.CDLL(os.path.join(build, "libbnorm.so"))
    lib.bnorm_set_num_threads.argtypes = [ctypes.c_int]
    lib.bnorm_version.restype = ctypes.c_char_p
    started = datetime.datetime.now(datetime.timezone.utc)

    load = ForeignLoad(args.wait_quiet)
    torch_cases = TorchCases(torch, lib, args)
    ctx = {}
    # Per round: tool -> {case: result}, and (shape, layout, dtype, threads) -> the higher of the
    # STREAM figures around the group.
    rounds = [{"bnorm": {}, "onednn": {}, "torch": {}, "bare": {}, "copy": {}} for _ in range(args.rounds)]
    copy_points = {t: [] for t in args.threads}
    groups = [(s, layout, dtype) for s in selected_shapes(args) for layout in layouts_of(s, args) for dtype in args.dtypes]
    bench = lambda name: os.path.join(build, "bench", name)
    for n, rnd in enumerate(rounds):
        for t in args.threads:
            before = load.measure("STREAM", None, stream, build, args, [t])[0][t]
            copy_points[t].append(before)
            for s, layout, dtype in groups:
                g = f"{shape_name(s)}/{layout}/{dtype}"
                print(f"round {n + 1} of {args.rounds}: {g}, {t} thread(s)", file=sys.stderr, flush=True)
                r, ctx["bnorm"] = load.measure("bnorm", (g, t), run_gbench, bench("bench_kernels"), t, args,
                                               [f"--benchmark_filter=^bnorm/{g}/"], [dtype])
                rnd["bnorm"].update(r)
                r, ctx["onednn"] = load.measure("oneDNN", (g, t), run_gbench, bench("bench_onednn"), t, args,
                                                [f"--benchmark_filter=^onednn[^/]*/{g}/"], [dtype])
                rnd["onednn"].update(r)
                rnd["torch"].update(load.measure("PyTorch", (g, t), torch_cases.run, s, layout, dtype, t))
                if layout != "nc" or args.smoke:  # small shapes: call overhead, not traffic (--smoke: the path runs)
                    rnd["bare"].update(load.measure("bare", (g, t), bare, build, args, s, layout, dtype, t))
                after = load.measure("STREAM", None, stream, build, args, [t])[0][t]
                copy_points[t].append(after)
                rnd["copy"][(s, layout, dtype, t)] = max(before, after)
                before = after
    bn, on, tr, br = (merge_rounds([rnd[tool] for rnd in rounds]) for tool in ("bnorm", "onednn", "torch", "bare"))
    copy = {k: statistics.median(rnd["copy"][k] for rnd in rounds) for k in rounds[0]["copy"]}

    header = ["shape", "layout", "dtype", "thr", "op", "bnorm ms", "GB/s", "% STREAM", "bare ms", "% of bare",
              "PyTorch ms", "oneDNN ms", "x PyTorch", "x oneDNN", "check", "target"]
    rows, met, judged, disturbed, bare_misses = [], 0, 0, 0, 0
    written_met, written_judged, written_misses = 0, 0, []
    for t in args.threads:
        for s in selected_shapes(args):
            for layout in layouts_of(s, args):
                for dtype in args.dtypes:
                    for op in OPS:
                        key = f"{shape_name(s)}/{layout}/{dtype}/{op}/t{t}"
                        b = bn.get("bnorm/" + key, {"error": "missing"})
                        bp = br.get("bare/" + key, {"error": "not run: small shape" if layout == "nc" else "missing"})
                        pt = tr.get((s, layout, dtype, op, t), {"error": "missing"})
                        # oneDNN: the faster of its plain-layout options (nchw kernel, or nChw16c + reorders)
                        od, mark = on.get("onednn/" + key, {"error": "missing"}), ""
                        blk = on.get("onednn-blocked+reorder/" + key)
                        if blk and "ms" in blk and ("ms" not in od or blk["ms"] < od["ms"]):
                            od, mark = blk, " (b)"
                        peers = [p["ms"] for p in (pt, od) if "ms" in p]
                        checks, failed = [], False
                        for name, p, k in (("pt", pt, "check"), ("dnnl", od, "check"), ("bn", pt, "bnorm_check")):
                            v = p.get(k)
                            if v is not None and v >= 0:
                                checks.append(f"{name} {v:.0e}")
                                failed |= v > TOLERANCE[dtype]
                        check = (" ".join(checks) or "-") + (" FAIL" if failed else "")
                        na = lambda p: "n/a (unsupported)" if p["error"].startswith("unsupported") else "n/a (" + p["error"][:40] + ")"
                        if "ms" in b:
                            ms = b["ms"]
                            gbps = bytes_moved(s, dtype, op) / ms / 1e6
                            pct = 100 * gbps / copy[(s, layout, dtype, t)]
                            ratio = lambda p: f"{p['ms'] / ms:.2f}" if "ms" in p else "-"
                            best = min(peers) / ms if peers else None
                            ok, text = target(op, layout, layout == "nc", pct, best)
                            if not ok and "ms" in bp and layout != "nc":
                                # Would the bare pattern, this row's bytes in the fastest order, meet it?
                                bare_pct = 100 * bytes_moved(s, dtype, op) / bp["ms"] / 1e6 / copy[(s, layout, dtype, t)]
                                bare_best = min(peers) / bp["ms"] if peers else None
                                bare_ok = target(op, layout, False, bare_pct, bare_best)[0]
                                figures = f"{bare_pct:.0f}%" + (f", {bare_best:.2f}x" if bare_best is not None else "")
                                text += f"; bare {'meets it' if bare_ok else 'misses too'}: {figures}"
                                bare_misses += not bare_ok
                            if failed:
                                ok, text = False, "NO (check failed)"
                            if load.disturbed((f"{shape_name(s)}/{layout}/{dtype}", t), t):
                                text += " (disturbed)"
                                disturbed += 1
                            judged += 1
                            met += ok
                            written = target_as_written(op, layout, layout == "nc", dtype, pct, best)
                            if written is not None:
                                written = written and not failed
                                written_judged += 1
                                written_met += written
                                if not written:
                                    written_misses.append(key)
                                elif not ok:
                                    text += "; as written: met"
                            cells = [fmt_ms(ms), f"{gbps:.1f}", f"{pct:.0f}%"]
                            cells += [fmt_ms(bp["ms"]), f"{100 * bp['ms'] / ms:.0f}%"] if "ms" in bp else ["-" if layout == "nc" else na(bp), "-"]
                        else:
                            cells, text = [na(b), "-", "-", fmt_ms(bp["ms"]) if "ms" in bp else "-", "-"], "n/a"
                            ratio = lambda p: "-"
                        rows.append([shape_name(s), layout, dtype, str(t), op] + cells +
                                    [fmt_ms(pt["ms"]) if "ms" in pt else na(pt),
                                     fmt_ms(od["ms"]) + mark if "ms" in od else na(od),
                                     ratio(pt), ratio(od), check, text])

    onednn_version = ctx.get("onednn", {}).get("onednn_version", "?")
    notes = [
        f"Date {started:%Y-%m-%d %H:%M} UTC; machine: {machine()}; {platform.platform()}.",
        "STREAM copy (bench/stream_copy, non-temporal stores, read+write bytes, median) measured before and after "
        "each (shape, layout, dtype) group, whose rows are held against the higher of the two; bnorm, oneDNN "
        f"and PyTorch run one after the other on each group; {args.rounds} round(s) over all groups, each row's "
        "times and STREAM figure the medians of its rounds': " +
        ", ".join(f"{t} thread{'s' if t > 1 else ''} {min(copy_points[t]):.1f}-{max(copy_points[t]):.1f} GB/s "
                  f"(median {statistics.median(copy_points[t]):.1f})" for t in args.threads) + ".",
        f"bnorm {lib.bnorm_version().decode()} (bench_kernels, C ABI); oneDNN {onednn_version} (bench_onednn; "
        "(b) = nChw16c kernel + reorders from/to nchw was faster than the nchw kernel); "
        f"PyTorch {torch.__version__} (aten.native_batch_norm[_backward], allocator: {allocator}).",
        f"Median of {args.repeats} repetitions of >= {args.min_time} s each per round; bytes 2|x| forward, 3|x| backward; "
        "x = peer ms / bnorm ms (>1: bnorm faster); check = max|a-b|/(1+max|b|) against bnorm float32 on the same "
        "values (pt PyTorch, dnnl oneDNN, bn bnorm's own bf16/f16).",
        "bare = bench/bare_patterns: the row's memory traffic with no arithmetic, in the fastest of the orders an "
        "implementation can take (one pass; two passes; channel by channel) with streamed or ordinary stores, "
        "on the large shapes (the small ones are call overhead, not traffic); "
        "% of bare = bare ms / bnorm ms. A missed target says whether the bare pattern meets it (its own % of "
        "STREAM and ratio to the faster peer).",
        f"Targets met: {met} of {judged} measured rows; of the {judged - met} misses, the bare pattern misses "
        f"{bare_misses} too. Issue 5's targets as written (its table for float32 rows, with the training "
        "forward's ratio on NCHW only; for bfloat16 and float16 the bandwidth targets only; no target for their "
        f"(N, C) rows): {written_met} of {written_judged} rows met"
        + (f"; missed: {', '.join(written_misses)}." if written_misses else "."),
        f"CPU used by other processes during the phases, in cores: {load.summary()} "
        f"(waited {load.waited:.0f} s for quiet). "
        f"{disturbed} rows are marked (disturbed): their group's phases needed more cores than were free "
        "(threads + that load > cores), so their times, and the 2-thread ones most, are not reliable.",
    ]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i < 5 or i >= 14 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print()
    for n in notes:
        print(n)
    print()
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    if args.markdown:
        text = "".join(f"- {n}\n" for n in notes) + "\n" + "| " + " | ".join(header) + " |\n"
        text += "| " + " | ".join("---" if i < 5 or i >= 14 else "---:" for i in range(len(header))) + " |\n"
        text += "".join("| " + " | ".join(c.replace("|", "/") for c in r) + " |\n" for r in rows)
        write_atomically(args.markdown, text)
    if args.json:
        write_atomically(args.json, json.dumps({"stream": {"/".join(map(str, k)): v for k, v in copy.items()},
                                                "stream_points": copy_points, "bnorm": bn, "onednn": on, "bare": br,
                                                "notes": notes,
                                                "torch": {"/".join(map(str, k)): v for k, v in tr.items()}}, indent=1))
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    print(f"\n({elapsed:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
