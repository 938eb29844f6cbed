#!/usr/bin/python3
"""Parity of bnorm's optimizers and schedules with torch.optim.

`nn_optim --write-trajectory FILE` runs SGD (plain, momentum + weight decay, Nesterov) and Adam
(default, and betas/eps/weight decay changed) for 12 steps on three parameters with given
gradients, the lr divided by 4 after 6 steps (as a schedule would), and writes the initial values, the
gradients, the parameters after every step and the final optimizer state. This script replays
the same gradients with torch.optim and compares, to 1e-6 relative (float32 rounding: the order of
operations differs slightly between torch's vectorized kernels and bnorm's loops). It also
compares StepLR and CosineLR with torch.optim.lr_scheduler stepped once per step.

usage: optim_parity.py --binary PATH/TO/nn_optim
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

RTOL = 1e-6
ATOL = 1e-7


def close(got, want, what, failures):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    error = np.abs(got - want) - (ATOL + RTOL * np.abs(want))
    if got.shape != want.shape or np.any(error > 0):
        failures.append(f"{what}: max |bnorm - torch| = {np.max(np.abs(got - want)):.3g}, "
                        f"bnorm {got.ravel()[:4]}, torch {want.ravel()[:4]}")


def check_optimizer(run, failures):
    label = f"{run['kind']}({', '.join(f'{k}={run[k]}' for k in sorted(run) if k not in ('kind', 'params', 'steps', 'state'))})"
    params = [torch.tensor(p["init"], dtype=torch.float32).reshape(p["shape"]).requires_grad_(True) for p in run["params"]]
    names = [p["name"] for p in run["params"]]
    if run["kind"] == "SGD":
        optimizer = torch.optim.SGD(params, lr=run["lr"], momentum=run["momentum"],
                                    weight_decay=run["weight_decay"], nesterov=run["nesterov"])
    else:
        optimizer = torch.optim.Adam(params, lr=run["lr"], betas=(run["beta1"], run["beta2"]), eps=run["eps"],
                                     weight_decay=run["weight_decay"])
    for k, step in enumerate(run["steps"]):
        optimizer.param_groups[0]["lr"] = step["lr"]
        for p, g in zip(params, step["grads"]):
            p.grad = torch.tensor(g, dtype=torch.float32).reshape(p.shape)
        optimizer.step()
        for name, p, after in zip(names, params, step["params_after"]):
            close(after, p.detach().numpy().ravel(), f"{label} step {k + 1} {name}", failures)
    torch_state = {"momentum_buffer": "momentum_buffer", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}
    for name, p in zip(names, params):
        for key, ours in torch_state.items():
            full = f"optimizer.{name}.{ours}"
            if full not in run["state"]:
                continue
            theirs = optimizer.state[p].get(key)
            if theirs is None:  # torch keeps no momentum buffer when momentum == 0; ours is zeros
                theirs = torch.zeros_like(p)
            close(run["state"][full], theirs.numpy().ravel(), f"{label} final {full}", failures)


def check_schedule(schedule, failures):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=schedule["base_lr"])
    if schedule["kind"] == "StepLR":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule["step_size"], gamma=schedule["gamma"])
        tolerance = 0.0  # the same multiplications in the same order
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule["total_steps"],
                                                               eta_min=schedule["min_lr"])
        tolerance = 1e-12 * schedule["base_lr"]  # closed form against torch's recursion
    for step, ours in enumerate(schedule["lr_at"]):
        theirs = optimizer.param_groups[0]["lr"]
        if abs(ours - theirs) > tolerance:
            failures.append(f"{schedule['kind']} lr_at({step}) = {ours!r}, torch {theirs!r}")
        optimizer.step()
        scheduler.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the nn_optim test binary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "trajectory.json")
        subprocess.run([args.binary, "--write-trajectory", path], check=True)
        with open(path) as f:
            data = json.load(f)
    failures = []
    for run in data["optimizers"]:
        check_optimizer(run, failures)
    for schedule in data["schedules"]:
        check_schedule(schedule, failures)
    checked = len(data["optimizers"]), len(data["schedules"])
    if failures:
        print(f"FAIL: {len(failures)} mismatches with torch {torch.__version__}:")
        print("\n".join(failures[:30]))
        return 1
    print(f"OK: {checked[0]} optimizer trajectories and {checked[1]} schedules match torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
