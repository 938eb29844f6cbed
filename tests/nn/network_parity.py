#!/usr/bin/env python3
"""PyTorch parity of the training system's networks (bnorm::nn::mlp and bnorm::nn::cnn).

Runs network_parity_dump (C++), which writes, for each case, the initial parameters and buffers, a
batch, and its results of one training step; builds the same torch.nn.Sequential (the same layer
indices, so the same state_dict names), loads the initial state, redoes the step and compares:
the loss, the training-mode logits, every parameter's gradient, the buffers after the step
(running_mean, running_var, num_batches_tracked), the parameters after p -= lr * grad, and the
evaluation-mode logits after that step. Tolerance: float32, relative to the largest magnitude of
each tensor (1e-4; 1e-5 for the loss).

    network_parity.py --dump build/tests/nn_network_parity_dump
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-5
DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64}


def mlp(batch_norm):
    layers = [nn.Flatten()]
    width = 784
    for _ in range(3):
        layers.append(nn.Linear(width, 100, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(100))
        layers.append(nn.Sigmoid())
        width = 100
    layers.append(nn.Linear(100, 10))
    return nn.Sequential(*layers)


def cnn(batch_norm):
    layers = []
    width = 1
    for channels in (32, 64):
        layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        width = channels
    layers += [nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


def load(directory, entry):
    array = np.fromfile(directory / entry["file"], dtype=DTYPES[entry["dtype"]])
    return array.reshape(entry["shape"])


def relative_error(ours, theirs):
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        return float("inf")
    scale = max(np.max(np.abs(theirs)) if theirs.size else 0.0, 1e-30)
    return float(np.max(np.abs(ours - theirs)) / scale) if theirs.size else 0.0


def check_case(directory, case):
    tensors = {key: load(directory, entry) for key, entry in case["tensors"].items()}
    model = mlp(case["batch_norm"]) if case["model"] == "mlp" else cnn(case["batch_norm"])
    state = {key[len("initial."):]: torch.from_numpy(value.copy())
             for key, value in tensors.items() if key.startswith("initial.")}
    theirs_names = set(model.state_dict().keys())
    if set(state) != theirs_names:
        return [f"state_dict names differ: ours only {sorted(set(state) - theirs_names)}, "
                f"torch only {sorted(theirs_names - set(state))}"]
    model.load_state_dict(state)

    x = torch.from_numpy(tensors["input"].copy())
    labels = torch.from_numpy(tensors["labels"].astype(np.int64))
    if case["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    failures = []
    results = []

    def compare(what, ours, theirs, tolerance=TOLERANCE):
        error = relative_error(ours, theirs)
        results.append((what, error))
        if not error <= tolerance:
            failures.append(f"{what}: relative error {error:.3g} > {tolerance:g}")

    compare("loss", case["loss"], loss.item(), LOSS_TOLERANCE)
    compare("logits", tensors["logits"], logits.detach().contiguous().numpy())
    parameters = dict(model.named_parameters())
    for name, parameter in parameters.items():
        compare(f"grad.{name}", tensors[f"grad.{name}"], parameter.grad.contiguous().numpy())
    for name, buffer in model.named_buffers():
        ours = tensors[f"after.{name}"]
        if name.endswith("num_batches_tracked"):
            if int(ours) != int(buffer.item()):
                failures.append(f"after.{name}: ours {int(ours)}, torch {int(buffer.item())}")
        else:
            compare(f"after.{name}", ours, buffer.contiguous().numpy())
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter -= case["lr"] * parameter.grad
            compare(f"updated.{name}", tensors[f"updated.{name}"], parameter.contiguous().numpy())
        model.eval()
        compare("eval_logits", tensors["eval_logits"], model(x).contiguous().numpy())

    worst = max(results, key=lambda r: r[1])
    print(f"{case['name']}: loss {case['loss']:.6f} (torch {loss.item():.6f}), {len(results)} comparisons, "
          f"worst {worst[0]} {worst[1]:.2e}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump", required=True, help="the network_parity_dump executable")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory(prefix="bnorm-network-parity-") as scratch:
        directory = pathlib.Path(scratch)
        subprocess.run([args.dump, str(directory)], check=True)
        index = json.loads((directory / "index.json").read_text())
        failures = []
        for case in index["cases"]:
            failures += [f"{case['name']}: {f}" for f in check_case(directory, case)]
    if not index["cases"]:
        failures.append("the dump wrote no cases")
    for failure in failures:
        print("FAIL", failure)
    print("PASS" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
