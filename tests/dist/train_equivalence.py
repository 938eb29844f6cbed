#!/usr/bin/env python3
"""`mpirun -np K bnorm train --sync-bn` against `bnorm train` in one process: the paper's MLP with
batch normalization, 200 steps of batch 60, float32. With --sync-bn, K = 2, 3, 4 and an uneven split
in which a process gets no samples every third step (--split skewed), the final parameters, running
statistics and losses equal the one-process run to 1e-5 relative (each tensor against its largest
magnitude); every process ends with the same parameter hash; only rank 0 wrote files; processes
started with different settings are named at start. Without
--sync-bn ("ghost batches") the parameters differ: the test can tell the two apart."""
import argparse, json, os, struct, subprocess, sys, tempfile

import numpy as np


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[t["dtype"]]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).astype(np.float64)
    return out


def losses(path):
    rows = [line.split(",") for line in open(path).read().split("\n")[1:] if line]
    return np.array([[float(r[1]) if r[1] != "nan" else 0.0, float(r[4])] for r in rows])


def worst(got, want):
    w = 0.0
    for name, ref in want.items():
        scale = max(np.max(np.abs(ref)), 1e-30)
        w = max(w, float(np.max(np.abs(got[name] - ref)) / scale))
    return w


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bnorm", required=True)
    p.add_argument("--mpirun", required=True, help="the mpirun command line, one string: \"mpirun --oversubscribe\"")
    a = p.parse_args()
    common = ["train", "--steps", "200", "--eval-every", "100", "--batch", "60", "--seed", "3", "--threads", "1"]
    env = dict(os.environ, BNORM_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        def run(prefix, extra, out):
            cmd = prefix + [a.bnorm] + common + extra + ["--out", out]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
            return r
        ref_dir = os.path.join(tmp, "one")
        run([], [], ref_dir)
        want, want_losses = load(os.path.join(ref_dir, "model.safetensors")), losses(os.path.join(ref_dir, "metrics.csv"))
        for k, extra in [(2, ["--sync-bn", "--split", "skewed"]), (3, ["--sync-bn", "--split", "skewed"]),
                         (4, ["--sync-bn"]), (4, ["--sync-bn", "--split", "skewed"]), (2, [])]:
            out = os.path.join(tmp, f"np{k}{''.join(extra)}")
            r = run(a.mpirun.split() + ["-np", str(k)], extra, out)
            got = load(os.path.join(out, "model.safetensors"))
            state = worst(got, want)
            gl = losses(os.path.join(out, "metrics.csv"))
            loss = float(np.max(np.abs(gl - want_losses) / np.maximum(np.abs(want_losses), 1e-30)))
            summary = json.load(open(os.path.join(out, "summary.json")))
            dist = summary["distributed"]
            files = sorted(os.listdir(out))
            label = f"K = {k} {' '.join(extra) or '(ghost batches, no --sync-bn)'}"
            print(f"{label}: worst relative difference of parameters and buffers {state:.3g}, of losses {loss:.3g}; "
                  f"identical on all processes: {dist['parameters_identical_on_all_processes']}; "
                  f"BN communication {dist['bn_communication_seconds']:.3f} s, gradient allreduce "
                  f"{dist['gradient_allreduce_seconds']:.3f} s of {summary['seconds']:.3f} s")
            ok = dist["parameters_identical_on_all_processes"] and dist["processes"] == k
            ok = ok and files == ["metrics.csv", "model.safetensors", "summary.json"]
            if extra:
                ok = ok and state <= 1e-5 and loss <= 1e-5
            else:
                ok = ok and state > 1e-3  # per-process statistics must not look like the whole batch's
            if not ok:
                failures += 1
                print(f"FAIL: {label} (files {files})\n{r.stderr}")
        # Processes that disagree on the run are named at start (MPMD: rank 1 gets another --batch).
        base = [a.bnorm] + common + ["--out", os.path.join(tmp, "mismatch")]
        other = [("30" if i > 0 and base[i - 1] == "--batch" else v) for i, v in enumerate(base)]
        cmd = a.mpirun.split() + ["-np", "1"] + base + [":", "-np", "1"] + other
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        expected = "distributed training: rank 1 has --batch = 30, rank 0 has 60"
        print(f"mismatched --batch: exit status {r.returncode}; says '{expected}': {expected in r.stderr}")
        if r.returncode == 0 or expected not in r.stderr:
            failures += 1
            print(f"FAIL: mismatched --batch not reported:\n{r.stdout}\n{r.stderr}")
    if failures:
        sys.exit(f"{failures} distributed runs failed")
    print("all distributed runs agree with one process")


if __name__ == "__main__":
    main()
