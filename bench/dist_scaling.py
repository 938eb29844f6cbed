#!/usr/bin/env python3
"""Time per training step of `bnorm train` for 1, 2 and 4 processes (mpirun), with and without
--sync-bn, and the shares of the step spent in the batch-normalization collectives and in the
gradient allreduce (both timed inside bnorm and reported in summary.json). Prints a Markdown table
for docs/distributed.md. One thread per process.

  /usr/bin/python3 bench/dist_scaling.py --bnorm build-release/apps/bnorm/bnorm --mpirun "mpirun --oversubscribe"
"""
import argparse, json, os, subprocess, tempfile


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bnorm", required=True)
    p.add_argument("--mpirun", default="mpirun --allow-run-as-root --oversubscribe")
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch", type=int, nargs="+", default=[60, 600])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    a = p.parse_args()
    env = dict(os.environ, BNORM_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    print("| model | batch | processes | --sync-bn | ms/step | BN communication | gradient allreduce |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in a.batch:
            for k in a.processes:
                for sync in ([False, True] if k > 1 else [False]):
                    out = os.path.join(tmp, f"b{batch}k{k}{sync}")
                    cmd = ([] if k == 1 else a.mpirun.split() + ["-np", str(k)]) + [
                        a.bnorm, "train", "--model", a.model, "--batch", str(batch), "--steps", str(a.steps),
                        "--eval-every", str(a.steps), "--threads", "1", "--out", out] + (["--sync-bn"] if sync else [])
                    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1200)
                    s = json.load(open(os.path.join(out, "summary.json")))
                    ms = 1000 * s["seconds"] / s["steps"]
                    d = s.get("distributed", {})
                    bn = d.get("bn_communication_seconds", 0) / s["seconds"]
                    grad = d.get("gradient_allreduce_seconds", 0) / s["seconds"]
                    print(f"| {a.model} | {batch} | {k} | {'yes' if sync else 'no'} | {ms:.3f} | "
                          f"{100 * bn:.1f}% | {100 * grad:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
