#!/usr/bin/python3
"""The `bnorm` command end to end: train writes its files, eval reads them, bad flags fail with a
one-line error, and a run interrupted (--stop-after) and resumed (--resume) ends with exactly the
parameters, buffers and metrics of a run that was not interrupted.

Usage: /usr/bin/python3 tests/app/test_cli.py --bnorm build/apps/bnorm/bnorm
"""
import argparse
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

BNORM = None


def run(*args, check=True):
    p = subprocess.run([BNORM, *args], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError("bnorm %s failed (%d):\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def tensors(path):
    """The tensors of a safetensors file as {name: bytes}."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    return {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}


def metrics(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.pop("seconds")
    return rows


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_train_writes_metrics_summary_and_checkpoint_and_eval_reads_it(self):
        out = os.path.join(self.dir, "a")
        run("train", "--model", "mlp", "--steps", "300", "--eval-every", "100", "--out", out, "--threads", "1")
        rows = metrics(os.path.join(out, "metrics.csv"))
        self.assertEqual([r["step"] for r in rows], ["0", "100", "200", "300"])
        summary = json.load(open(os.path.join(out, "summary.json")))
        for key in ("final_test_accuracy", "final_train_loss", "steps", "seconds", "steps_per_second"):
            self.assertIn(key, summary)
        self.assertEqual(summary["steps"], 300)
        self.assertGreater(summary["final_test_accuracy"], 0.5, "300 steps of the BN MLP learn something")
        names = tensors(os.path.join(out, "model.safetensors"))
        self.assertIn("1.weight", names)
        self.assertIn("2.running_mean", names)
        self.assertIn("2.num_batches_tracked", names)
        p = run("eval", "--checkpoint", os.path.join(out, "model.safetensors"), "--threads", "1")
        self.assertIn("test accuracy %.4f" % summary["final_test_accuracy"], p.stdout)

    def test_interrupted_and_resumed_run_ends_bitwise_identical(self):
        for model, extra in (("mlp", ["--dropout", "0.1", "--momentum", "0.9", "--schedule", "cosine"]),
                             ("mlp", ["--optimizer", "adam", "--lr", "0.001", "--no-bn"])):
            with self.subTest(model=model, extra=extra):
                common = ["train", "--model", model, "--steps", "240", "--eval-every", "60", "--threads", "1",
                          "--batch", "32", *extra]
                a, b, c = (os.path.join(self.dir, x + str(len(extra))) for x in "abc")
                run(*common, "--out", a)
                run(*common, "--out", b, "--stop-after", "130")
                run(*common, "--out", c, "--resume", os.path.join(b, "model.safetensors"))
                ta, tc = tensors(os.path.join(a, "model.safetensors")), tensors(os.path.join(c, "model.safetensors"))
                self.assertEqual(sorted(ta), sorted(tc))
                for name in ta:
                    self.assertEqual(ta[name], tc[name], "tensor %s differs after resume" % name)
                self.assertEqual(metrics(os.path.join(a, "metrics.csv")), metrics(os.path.join(c, "metrics.csv")))

    def test_bad_flags_fail_with_one_line_error(self):
        cases = [["train", "--lr", "-1"], ["train", "--model", "resnet"], ["train", "--batch", "1"],
                 ["train", "--steps", "10", "--epochs", "1"], ["train", "--optimizer", "lbfgs"],
                 ["train", "--data", "/nonexistent", "--steps", "10"], ["eval", "--checkpoint", "/nonexistent"],
                 ["experiment", "no-such"], ["train", "--momentum", "1.5"], ["train", "--dropout", "2"],
                 ["frobnicate"], [], ["train", "--steps", "abc"],
                 ["train", "--resume", "/etc/hostname", "--steps", "10"]]
        for args in cases:
            with self.subTest(args=args):
                p = run(*args, check=False)
                self.assertNotEqual(p.returncode, 0)
                err = (p.stderr or p.stdout).strip()
                self.assertTrue(err, "no message")
                self.assertNotIn("terminate called", err)
                self.assertNotIn("Traceback", err)
                self.assertLessEqual(len([l for l in err.splitlines() if l.strip()]), 2, err)

    def test_experiment_writes_a_self_contained_report_with_figures(self):
        out = os.path.join(self.dir, "exp")
        p = run("experiment", "regularization", "--steps", "100", "--seeds", "1", "--out", out, "--threads", "1")
        report = os.path.join(out, "report.html")
        self.assertIn(report, p.stdout, "the command says where the report is")
        html = open(report, encoding="utf-8").read()
        self.assertGreaterEqual(html.count("<svg"), 1)
        for variant in ("neither", "BN", "Dropout 0.2", "BN + Dropout 0.2"):
            self.assertIn(variant, html)
        self.assertNotIn("<script", html)
        self.assertNotIn('src="http', html)
        self.assertIn("experiment regularization", html, "the exact command is in the report")
        self.assertEqual(len([r for r, _, files in os.walk(out) if "metrics.csv" in files]), 4)

    def test_help_is_available_everywhere(self):
        for sub in ([], ["train"], ["eval"], ["experiment"], ["demo"]):
            with self.subTest(sub=sub):
                p = run(*sub, "--help")
                self.assertIn("--help", p.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bnorm", required=True)
    args, rest = parser.parse_known_args()
    BNORM = os.path.abspath(args.bnorm)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
