#!/usr/bin/python3
"""Training-step speed of the paper's MLP with batch normalization (batch 60, one thread):
bnorm against PyTorch, measured in one run on the same machine.

Usage: /usr/bin/python3 bench/train_step.py --bnorm build-release/apps/bnorm/bnorm [--steps 5000] [--repeats 3]

bnorm: `bnorm train --steps N --threads 1`, whose summary.json gives the training time without the
evaluations (data batching included). PyTorch: the same network (Flatten, 3 x [Linear(no bias),
BatchNorm1d, Sigmoid], Linear), SGD, cross-entropy, batch 60, torch.set_num_threads(1), batches
sliced from a tensor preloaded in memory. Medians over the repeats. Prints which BLAS each side uses.
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch


def load_images(split="train", path="/usr/share/datasets/fashion-mnist"):
    with gzip.open(os.path.join(path, split + "-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(path, split + "-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def torch_mlp():
    torch.manual_seed(1)
    layers = [torch.nn.Flatten()]
    width = 784
    for _ in range(3):
        layers += [torch.nn.Linear(width, 100, bias=False), torch.nn.BatchNorm1d(100), torch.nn.Sigmoid()]
        width = 100
    layers.append(torch.nn.Linear(100, 10))
    return torch.nn.Sequential(*layers)


def torch_steps_per_second(steps, x, y):
    net = torch_mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss_fn = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(x.shape[0])
    start = time.perf_counter()
    for step in range(steps):
        i = (step * 60) % (x.shape[0] - 60)
        idx = perm[i:i + 60]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def torch_inference_ms(x_test, y_test):
    """Evaluation mode, the 10,000 test images in one batch: logits and the loss, as bnorm eval."""
    net = torch_mlp().eval()
    loss_fn = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        loss_fn(net(x_test), y_test)  # warm-up
        start = time.perf_counter()
        logits = net(x_test)
        loss_fn(logits, y_test)
        (logits.argmax(1) == y_test).sum()
        return 1000 * (time.perf_counter() - start)


def bnorm_inference_ms(bnorm, checkpoint, threads):
    """threads None: the command's default (for the mlp: its evaluations' products on every core)."""
    extra = [] if threads is None else ["--threads", str(threads)]
    out = subprocess.run([bnorm, "eval", "--checkpoint", checkpoint] + extra, check=True,
                         capture_output=True, text=True).stdout
    return float(out.rsplit("test images", 1)[1].split("ms")[0])


def bnorm_full_run(bnorm):
    """A whole default run, `bnorm train --steps 50000` (evaluations every 500 steps included)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([bnorm, "train", "--steps", "50000", "--out", out], check=True, capture_output=True)
        wall = time.perf_counter() - start
        summary = json.load(open(os.path.join(out, "summary.json")))
        return wall, summary["seconds"], summary["final_test_accuracy"]


def bnorm_steps_per_second(bnorm, steps):
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([bnorm, "train", "--model", "mlp", "--bn", "--lr", "0.5", "--steps", str(steps),
                        "--eval-every", str(steps), "--threads", "1", "--out", out],
                       check=True, capture_output=True)
        return json.load(open(os.path.join(out, "summary.json")))["steps_per_second"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bnorm", required=True)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-run", action="store_true", help="also time a whole default 50,000-step run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = load_images()
    # Debian's torch is built with BLAS_INFO=generic: it calls whatever libblas.so.3 the alternatives
    # system points to (OpenBLAS once libopenblas0-pthread is installed, else the slow reference BLAS).
    blas = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"],
                          capture_output=True, text=True).stdout
    value = [l.split(":", 1)[1].strip() for l in blas.splitlines() if l.startswith("Value:")]
    print("torch %s, libblas.so.3 -> %s" % (torch.__version__, value[0] if value else "unknown"))
    print("bnorm: OpenBLAS (libopenblas0-pthread) through cblas_sgemm, one thread")
    b = [bnorm_steps_per_second(args.bnorm, args.steps) for _ in range(args.repeats)]
    t = [torch_steps_per_second(args.steps, x, y) for _ in range(args.repeats)]
    mb, mt = statistics.median(b), statistics.median(t)
    print("MLP with BN, batch 60, 1 thread, %d steps, median of %d:" % (args.steps, args.repeats))
    print("  bnorm   %8.0f steps/s  (%.3f ms/step)  runs: %s" % (mb, 1000 / mb, ", ".join("%.0f" % v for v in b)))
    print("  PyTorch %8.0f steps/s  (%.3f ms/step)  runs: %s" % (mt, 1000 / mt, ", ".join("%.0f" % v for v in t)))
    print("  ratio bnorm/PyTorch: %.2fx; 50,000 steps: bnorm %.1f s, PyTorch %.1f s" % (mb / mt, 50000 / mb, 50000 / mt))
    x_test, y_test = load_images("t10k")
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([args.bnorm, "train", "--steps", "100", "--out", out], check=True, capture_output=True)
        runs = max(5, args.repeats)
        cores = os.cpu_count() or 1
        for threads in (1, cores) if cores > 1 else (1,):
            bi = [bnorm_inference_ms(args.bnorm, os.path.join(out, "model.safetensors"),
                                     1 if threads == 1 else None) for _ in range(runs)]
            torch.set_num_threads(threads)
            ti = [torch_inference_ms(x_test, y_test) for _ in range(runs)]
            torch.set_num_threads(1)
            label = "1 thread" if threads == 1 else "%d threads (bnorm's default for the mlp's evaluations)" % threads
            print("Inference, the 10,000 test images, %s, median of %d:" % (label, runs))
            print("  bnorm   %6.1f ms  runs: %s" % (statistics.median(bi), ", ".join("%.1f" % v for v in bi)))
            print("  PyTorch %6.1f ms  runs: %s" % (statistics.median(ti), ", ".join("%.1f" % v for v in ti)))
    if args.full_run:
        wall, train, accuracy = bnorm_full_run(args.bnorm)
        print("A whole default run, bnorm train --steps 50000: %.1f s wall (%.1f s training, evaluations every "
              "500 steps on 2 x 10,000 images the rest), test accuracy %.4f" % (wall, train, accuracy))


if __name__ == "__main__":
    main()
