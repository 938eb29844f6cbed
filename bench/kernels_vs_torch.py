#!/usr/bin/python3
"""libbnorm's kernels against PyTorch's CPU batch normalization, in one process, same inputs,
float32, medians of repeated runs. A first side-by-side; the full benchmark (Google Benchmark,
oneDNN, all shapes) is issue 5's.

Usage: /usr/bin/python3 bench/kernels_vs_torch.py --lib build-release/libbnorm.so [--repeats 7]
GB/s counts 2*|x| bytes for a forward pass and 3*|x| for a backward pass.
"""
import argparse
import ctypes
import statistics
import time

import numpy as np
import torch


class Desc(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("layout", ctypes.c_int), ("n", ctypes.c_int64),
                ("c", ctypes.c_int64), ("spatial", ctypes.c_int64)]


class Options(ctypes.Structure):
    _fields_ = [("eps", ctypes.c_double), ("momentum", ctypes.c_double), ("running_var_unbiased", ctypes.c_int)]


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    lib = ctypes.CDLL(args.lib)
    lib.bnorm_set_num_threads.argtypes = [ctypes.c_int]
    P = lambda a: a.ctypes.data_as(ctypes.c_void_p)
    shapes = [(32, 64, 112, 112), (64, 256, 14, 14), (256, 1024, 1, 1)]
    print("%-20s %-6s %-4s %-9s %9s %9s %7s %9s" % ("shape", "layout", "thr", "op", "bnorm ms", "torch ms", "ratio", "bnorm GB/s"))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        lib.bnorm_set_num_threads(threads)
        for (n, c, h, w) in shapes:
            for layout in ("nchw", "nhwc"):
                if h == 1 and layout == "nhwc":
                    continue
                xt = torch.randn(n, c, h, w)
                if layout == "nhwc":
                    xt = xt.contiguous(memory_format=torch.channels_last)
                    x = xt.permute(0, 2, 3, 1).contiguous().numpy()
                else:
                    x = xt.numpy()
                y, dx, dy = np.empty_like(x), np.empty_like(x), np.random.randn(*x.shape).astype(np.float32)
                g, b = np.ones(c, np.float32), np.zeros(c, np.float32)
                rm, rv, sm, si, dg, db = (np.zeros(c, np.float32) for _ in range(6))
                rv += 1
                d = Desc(0, 1 if layout == "nhwc" else 0, n, c, h * w)
                o = Options(1e-5, 0.1, 1)
                tw, tb, trm, trv = (torch.from_numpy(a) for a in (g, b, rm.copy(), rv.copy()))
                dyt = torch.from_numpy(dy)
                if layout == "nhwc":
                    dyt = dyt.permute(0, 3, 1, 2)
                cases = {
                    "fwd-train": (lambda: lib.bnorm_forward_training(ctypes.byref(d), ctypes.byref(o), P(x), P(g), P(b), P(rm), P(rv), None, P(y), P(sm), P(si)),
                                  lambda: torch.batch_norm(xt, tw, tb, trm, trv, True, 0.1, 1e-5, False), 2),
                    "fwd-infer": (lambda: lib.bnorm_forward_inference(ctypes.byref(d), ctypes.byref(o), P(x), P(g), P(b), P(rm), P(rv), P(y)),
                                  lambda: torch.batch_norm(xt, tw, tb, trm, trv, False, 0.1, 1e-5, False), 2),
                    "backward": (lambda: lib.bnorm_backward(ctypes.byref(d), P(dy), P(x), P(g), P(sm), P(si), P(dx), P(dg), P(db)),
                                 lambda: torch.ops.aten.native_batch_norm_backward(dyt, xt, tw, trm, trv, torch.from_numpy(sm), torch.from_numpy(si), True, 1e-5, [True, True, True]), 3),
                }
                for op, (ours, theirs, passes) in cases.items():
                    a, t = median_ms(ours, args.repeats), median_ms(theirs, args.repeats)
                    print("%-20s %-6s %-4d %-9s %9.3f %9.3f %6.2fx %9.1f" % ("x".join(map(str, (n, c, h, w))), layout, threads, op,
                          a, t, t / a, passes * x.nbytes / a / 1e6))


if __name__ == "__main__":
    main()
