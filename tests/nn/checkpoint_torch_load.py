#!/usr/bin/python3
"""Load a bnorm checkpoint into PyTorch: the example for users, and a test.

A checkpoint is a safetensors file whose tensors carry PyTorch's state-dict names, so the dozen
lines of `load_safetensors` below (struct + json + numpy; no `safetensors` package needed) load it:

    tensors, metadata = load_safetensors("run/ckpt.safetensors")
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, strict=True)

Tensors named "optimizer.<parameter>.<state>" hold the optimizer's state (momentum_buffer, exp_avg,
exp_avg_sq); __metadata__ holds strings: the optimizer's kind, hyperparameters and step count
("optimizer", "optimizer.lr", "optimizer.steps", ...), the random engines ("random_state.<name>")
and what the trainer recorded (step, epoch, seed, ...).

As a test (`checkpoint_torch_load.py --binary nn_checkpoint`): the C++ test binary saves a
checkpoint of that model, made of test-only layers, with the values it expects; this script loads
it into torch with strict=True, compares every tensor bitwise and the evaluation-mode output.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch


def load_safetensors(path):
    """({name: tensor}, metadata) of a safetensors file with F32 and I64 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])  # little-endian header length
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    dtypes = {"F32": "<f4", "I64": "<i8"}
    tensors = {name: torch.from_numpy(np.frombuffer(data[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]],
                                                     dtype=dtypes[e["dtype"]]).reshape(e["shape"]).copy())
               for name, e in header.items()}
    return tensors, metadata


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the nn_checkpoint test binary (writes the fixture)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([args.binary, "--write-fixture", scratch], check=True)
        tensors, metadata = load_safetensors(os.path.join(scratch, "model.safetensors"))
        with open(os.path.join(scratch, "expected.json")) as f:
            expected = json.load(f)

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, strict=True)

    failures = []
    state = model.state_dict()
    for name, values in expected["state_dict"].items():
        got = state[name]
        want = torch.tensor(values, dtype=got.dtype).reshape(got.shape)
        if not torch.equal(got, want):
            failures.append(f"{name}: torch has {got.flatten().tolist()}, bnorm saved {values}")
    if state["1.num_batches_tracked"].dtype != torch.int64 or tensors["1.num_batches_tracked"].dim() != 0:
        failures.append("1.num_batches_tracked is not an int64 scalar")
    for name, parameter in model.named_parameters():
        for what in ("momentum_buffer",):
            if tuple(tensors[f"optimizer.{name}.{what}"].shape) != tuple(parameter.shape):
                failures.append(f"optimizer.{name}.{what} is not shaped as {name}")
    for key, value in expected["metadata"].items():
        if metadata.get(key) != value:
            failures.append(f"metadata {key}: {metadata.get(key)!r}, expected {value!r}")
    if metadata.get("optimizer") != "SGD" or metadata.get("optimizer.steps") != "3":
        failures.append(f"optimizer metadata: {metadata}")

    model.eval()
    x = torch.tensor(expected["input"], dtype=torch.float32).reshape(-1, 2)
    with torch.no_grad():
        y = model(x)
    want = torch.tensor(expected["output"], dtype=torch.float32).reshape(y.shape)
    if not torch.allclose(y, want, rtol=1e-5, atol=1e-6):
        failures.append(f"eval output: torch {y.flatten().tolist()}, bnorm {want.flatten().tolist()}")

    if failures:
        print("FAIL:\n" + "\n".join(failures))
        return 1
    print(f"OK: {len(tensors)} tensors loaded into torch {torch.__version__} (strict), values and eval output match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
