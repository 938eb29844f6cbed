#!/usr/bin/python3
"""ONNX BatchNormalization conformance of libbnorm's C ABI against ONNX's own test data.

Usage: /usr/bin/python3 tests/onnx/test_onnx_conformance.py --lib build/libbnorm.so [unittest args]

Runs every directory of Debian's libonnx-testdata matching node/test_batchnorm_* and
pytorch-converted/test_BatchNorm* (one test method per directory), feeding model.onnx's
BatchNormalization node with test_data_set_*/input_*.pb (or the graph's initializers) through
bnorm_forward_inference (inference) or bnorm_forward_training (training_mode=1) and comparing
with output_*.pb.

ONNX -> bnorm mapping: bnorm momentum = 1 - onnx momentum (ONNX weighs the old value),
running_var_unbiased = 0 (ONNX stores the biased variance), x (N, C, d1, ...) is channels-first
with spatial = prod(d1, ...).
"""
import argparse
import ctypes
import glob
import os
import sys
import unittest

try:
    import numpy as np
    import onnx
    from onnx import numpy_helper
except ImportError as e:  # no silent skip: the project's test command installs these
    sys.stderr.write("test_onnx_conformance.py needs numpy and onnx (run it with /usr/bin/python3 or "
                     "install them): %s\n" % e)
    sys.exit(2)

DATA_ROOT = "/usr/share/libonnx-testdata/data"
PATTERNS = [os.path.join(DATA_ROOT, "node", "test_batchnorm_*"),
            os.path.join(DATA_ROOT, "pytorch-converted", "test_BatchNorm*")]
MIN_DIRS = 9
RTOL, ATOL = 1e-5, 1e-6

BNORM_OK = 0
BNORM_F32, BNORM_F64 = 0, 1
CHANNELS_FIRST = 0


class Desc(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("layout", ctypes.c_int), ("n", ctypes.c_int64),
                ("c", ctypes.c_int64), ("spatial", ctypes.c_int64)]


class Options(ctypes.Structure):
    _fields_ = [("eps", ctypes.c_double), ("momentum", ctypes.c_double),
                ("running_var_unbiased", ctypes.c_int)]


LIB = None  # set in main()


def load_lib(path):
    lib = ctypes.CDLL(path)
    P, D, O = ctypes.c_void_p, ctypes.POINTER(Desc), ctypes.POINTER(Options)
    lib.bnorm_forward_training.argtypes = [D, O, P, P, P, P, P, P, P, P, P]
    lib.bnorm_forward_training.restype = ctypes.c_int
    lib.bnorm_forward_inference.argtypes = [D, O, P, P, P, P, P, P]
    lib.bnorm_forward_inference.restype = ctypes.c_int
    lib.bnorm_last_error.argtypes = []
    lib.bnorm_last_error.restype = ctypes.c_char_p
    return lib


def ptr(a):
    if a is None:
        return None
    assert isinstance(a, np.ndarray) and a.flags["C_CONTIGUOUS"]
    return a.ctypes.data_as(ctypes.c_void_p)


def last_error():
    s = LIB.bnorm_last_error()
    return s.decode("utf-8", "replace") if s else ""


def find_dirs():
    dirs = []
    for pat in PATTERNS:
        dirs += [d for d in glob.glob(pat) if os.path.isdir(d)]
    return sorted(dirs)


def load_pb(path):
    return numpy_helper.to_array(onnx.load_tensor(path))


def numbered(folder, prefix):
    files = glob.glob(os.path.join(folder, prefix + "_*.pb"))
    return sorted(files, key=lambda f: int(os.path.basename(f)[len(prefix) + 1:-3]))


def default_opset(model):
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise AssertionError("model imports no default-domain opset")


class OnnxConformance(unittest.TestCase):
    def _run_case(self, case_dir):
        model = onnx.load(os.path.join(case_dir, "model.onnx"))
        graph = model.graph
        opset = default_opset(model)
        nodes = [n for n in graph.node if n.op_type == "BatchNormalization"]
        self.assertEqual(len(nodes), 1, "expected exactly one BatchNormalization node")
        self.assertEqual(len(graph.node), 1, "graph has nodes other than BatchNormalization")
        node = nodes[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        eps = float(attrs.get("epsilon", 1e-5))
        onnx_momentum = float(attrs.get("momentum", 0.9))
        if opset >= 14:
            training = bool(attrs.get("training_mode", 0))
        elif opset <= 6:
            training = not bool(attrs.get("is_test", 0))
            self.assertEqual(int(attrs.get("spatial", 1)), 1, "spatial=0 (per-element stats) unsupported")
        else:
            training = len(node.output) > 1
        if training and opset < 14:
            self.fail("training mode of opset %d (saved_mean/saved_var outputs) is not mapped" % opset)

        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        fed_inputs = [i.name for i in graph.input if i.name not in inits]
        sets = sorted(glob.glob(os.path.join(case_dir, "test_data_set_*")))
        self.assertGreater(len(sets), 0, "no test_data_set_* in %s" % case_dir)
        for ds in sets:
            with self.subTest(data_set=os.path.basename(ds)):
                in_files = numbered(ds, "input")
                out_files = numbered(ds, "output")
                self.assertEqual(len(in_files), len(fed_inputs),
                                 "input_*.pb count vs graph inputs without initializer %s" % fed_inputs)
                values = dict(inits)
                for name, f in zip(fed_inputs, in_files):
                    values[name] = load_pb(f)
                self.assertGreaterEqual(len(node.input), 5)
                x, scale, bias, mean, var = (values[nm] for nm in node.input[:5])
                outputs = [o.name for o in graph.output]
                self.assertEqual(len(out_files), len(outputs), "output_*.pb count vs graph outputs")
                expected = {nm: load_pb(f) for nm, f in zip(outputs, out_files)}

                if x.dtype == np.float32:
                    dtype, npdt = BNORM_F32, np.float32
                elif x.dtype == np.float64:
                    dtype, npdt = BNORM_F64, np.float64
                else:
                    self.fail("unsupported x dtype %s" % x.dtype)
                self.assertGreaterEqual(x.ndim, 2)
                n, c = x.shape[0], x.shape[1]
                spatial = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
                for nm, a in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var)):
                    self.assertEqual(a.shape, (c,), "%s shape" % nm)
                desc = Desc(dtype, CHANNELS_FIRST, n, c, spatial)
                opts = Options(eps, 1.0 - onnx_momentum, 0)
                xc = np.ascontiguousarray(x, dtype=npdt)
                w = np.ascontiguousarray(scale, dtype=npdt)
                b = np.ascontiguousarray(bias, dtype=npdt)
                y = np.full_like(xc, np.nan)
                if training:
                    rm = np.array(mean, dtype=npdt, copy=True, order="C")
                    rv = np.array(var, dtype=npdt, copy=True, order="C")
                    nbt = np.zeros(1, dtype=np.int64)
                    sm = np.full(c, np.nan, dtype=npdt)
                    si = np.full(c, np.nan, dtype=npdt)
                    st = LIB.bnorm_forward_training(ctypes.byref(desc), ctypes.byref(opts), ptr(xc), ptr(w),
                                                    ptr(b), ptr(rm), ptr(rv), ptr(nbt), ptr(y), ptr(sm),
                                                    ptr(si))
                    self.assertEqual(st, BNORM_OK, "bnorm_forward_training: %d %s" % (st, last_error()))
                    self.assertEqual(int(nbt[0]), 1, "num_batches_tracked not incremented once")
                    got = {node.output[0]: y}
                    if len(node.output) > 1:
                        got[node.output[1]] = rm
                    if len(node.output) > 2:
                        got[node.output[2]] = rv
                else:
                    rm = np.ascontiguousarray(mean, dtype=npdt)
                    rv = np.ascontiguousarray(var, dtype=npdt)
                    st = LIB.bnorm_forward_inference(ctypes.byref(desc), ctypes.byref(opts), ptr(xc), ptr(w),
                                                     ptr(b), ptr(rm), ptr(rv), ptr(y))
                    self.assertEqual(st, BNORM_OK, "bnorm_forward_inference: %d %s" % (st, last_error()))
                    got = {node.output[0]: y}
                for nm in outputs:
                    self.assertIn(nm, got, "graph output %r is not produced by the node" % nm)
                    self.assertEqual(got[nm].shape, expected[nm].shape, "output %r shape" % nm)
                    np.testing.assert_allclose(got[nm], expected[nm], rtol=RTOL, atol=ATOL,
                                               err_msg="output %r of %s (training=%s)" % (nm, case_dir, training))


class DataPresence(unittest.TestCase):
    def test_at_least_9_onnx_batchnorm_test_directories_found(self):
        dirs = find_dirs()
        self.assertGreaterEqual(len(dirs), MIN_DIRS,
                                "found %d ONNX batchnorm test dirs (%s) under %s; is libonnx-testdata installed?"
                                % (len(dirs), dirs, DATA_ROOT))


def _add_case_tests():
    for d in find_dirs():
        name = "test_onnx_" + os.path.basename(os.path.dirname(d)).replace("-", "_") + "_" + os.path.basename(d)

        def t(self, d=d):
            self._run_case(d)
        t.__doc__ = "bnorm output equals ONNX test data %s" % os.path.relpath(d, DATA_ROOT)
        setattr(OnnxConformance, name, t)


_add_case_tests()


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--lib", required=True, help="path of libbnorm.so")
    args, rest = ap.parse_known_args()
    global LIB
    LIB = load_lib(args.lib)
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    res = prog.result
    if not res.wasSuccessful() or res.testsRun == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
