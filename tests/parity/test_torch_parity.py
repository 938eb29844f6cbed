#!/usr/bin/python3
"""Parity of libbnorm's C ABI (include/bnorm/bnorm.h) with PyTorch on the same inputs.

Usage: /usr/bin/python3 tests/parity/test_torch_parity.py --lib build/libbnorm.so [unittest args]

Every case builds its input in PyTorch's (N, C, spatial...) layout, runs torch (nn.BatchNorm*d
modules for training, so num_batches_tracked and momentum=None are PyTorch's own logic, and
torch.nn.functional.batch_norm for inference), runs bnorm through ctypes on the same data in
channels-first or channels-last layout, and compares after transposing back.
"""
import argparse
import ctypes
import itertools
import math
import sys
import unittest

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # no silent skip: the project's test command installs these
    sys.stderr.write("test_torch_parity.py needs numpy and torch (run it with /usr/bin/python3 or "
                     "install them): %s\n" % e)
    sys.exit(2)

BNORM_OK, BNORM_EINVAL = 0, 1
BNORM_F32, BNORM_F64 = 0, 1
CHANNELS_FIRST, CHANNELS_LAST = 0, 1
LAYOUT_NAMES = {CHANNELS_FIRST: "channels_first", CHANNELS_LAST: "channels_last"}
DTYPES = {BNORM_F32: (np.float32, torch.float32, 1e-5, "f32"),
          BNORM_F64: (np.float64, torch.float64, 1e-10, "f64")}


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
    lib.bnorm_backward.argtypes = [D, P, P, P, P, P, P, P, P]
    lib.bnorm_backward.restype = ctypes.c_int
    lib.bnorm_backward_inference.argtypes = [D, O, P, P, P, P, P, P, P, P]
    lib.bnorm_backward_inference.restype = ctypes.c_int
    lib.bnorm_last_error.argtypes = []
    lib.bnorm_last_error.restype = ctypes.c_char_p
    lib.bnorm_set_num_threads.argtypes = [ctypes.c_int]
    lib.bnorm_set_num_threads.restype = ctypes.c_int
    lib.bnorm_version.argtypes = []
    lib.bnorm_version.restype = ctypes.c_char_p
    return lib


def ptr(a):
    if a is None:
        return None
    assert isinstance(a, np.ndarray) and a.flags["C_CONTIGUOUS"], "bnorm needs C-contiguous arrays"
    return a.ctypes.data_as(ctypes.c_void_p)


def last_error():
    s = LIB.bnorm_last_error()
    return s.decode("utf-8", "replace") if s else ""


# ---- layout helpers: arrays are (N, C, spatial...) for torch, bnorm sees layout-ordered memory ----

def to_layout(a, layout):
    """A C-contiguous copy of NCHW-ordered a in bnorm's layout (always a copy: callers write to it)."""
    if layout == CHANNELS_LAST:
        a = np.moveaxis(a, 1, -1)
    return np.array(a, order="C", copy=True)


def from_layout(a, layout):
    if layout == CHANNELS_LAST:
        a = np.moveaxis(a, -1, 1)
    return np.array(a, order="C", copy=True)


def make_desc(shape, dtype, layout):
    spatial = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return Desc(dtype, layout, shape[0], shape[1], spatial)


def np_copy(a, npdt):
    return None if a is None else np.ascontiguousarray(np.array(a, dtype=npdt))


# ---- bnorm wrappers taking/returning NCHW-ordered numpy arrays ----

def bn_forward_training(x, dtype, layout, weight, bias, rmean, rvar, nbt, eps, momentum,
                        unbiased=1, save=True):
    """rmean/rvar/nbt are updated in place. Returns (status, y NCHW, save_mean, save_invstd)."""
    npdt = DTYPES[dtype][0]
    d = make_desc(x.shape, dtype, layout)
    o = Options(eps, momentum, unbiased)
    xl = to_layout(x.astype(npdt), layout)
    y = np.full_like(xl, np.nan)
    sm = np.full(x.shape[1], np.nan, dtype=npdt) if save else None
    si = np.full(x.shape[1], np.nan, dtype=npdt) if save else None
    st = LIB.bnorm_forward_training(ctypes.byref(d), ctypes.byref(o), ptr(xl), ptr(weight), ptr(bias),
                                    ptr(rmean), ptr(rvar), ptr(nbt), ptr(y), ptr(sm), ptr(si))
    return st, from_layout(y, layout), sm, si


def bn_backward(dy, x, dtype, layout, weight, smean, sinvstd, want_dparams=True):
    npdt = DTYPES[dtype][0]
    d = make_desc(x.shape, dtype, layout)
    xl = to_layout(x.astype(npdt), layout)
    dyl = to_layout(dy.astype(npdt), layout)
    dx = np.full_like(xl, np.nan)
    dw = np.full(x.shape[1], np.nan, dtype=npdt) if want_dparams else None
    db = np.full(x.shape[1], np.nan, dtype=npdt) if want_dparams else None
    st = LIB.bnorm_backward(ctypes.byref(d), ptr(dyl), ptr(xl), ptr(weight), ptr(smean), ptr(sinvstd),
                            ptr(dx), ptr(dw), ptr(db))
    return st, from_layout(dx, layout), dw, db


def bn_forward_inference(x, dtype, layout, weight, bias, rmean, rvar, eps):
    npdt = DTYPES[dtype][0]
    d = make_desc(x.shape, dtype, layout)
    o = Options(eps, 0.1, 1)
    xl = to_layout(x.astype(npdt), layout)
    y = np.full_like(xl, np.nan)
    st = LIB.bnorm_forward_inference(ctypes.byref(d), ctypes.byref(o), ptr(xl), ptr(weight), ptr(bias),
                                     ptr(rmean), ptr(rvar), ptr(y))
    return st, from_layout(y, layout)


def bn_backward_inference(dy, x, dtype, layout, weight, rmean, rvar, eps, want_dparams=True):
    npdt = DTYPES[dtype][0]
    d = make_desc(x.shape, dtype, layout)
    o = Options(eps, 0.1, 1)
    xl = to_layout(x.astype(npdt), layout)
    dyl = to_layout(dy.astype(npdt), layout)
    dx = np.full_like(xl, np.nan)
    dw = np.full(x.shape[1], np.nan, dtype=npdt) if want_dparams else None
    db = np.full(x.shape[1], np.nan, dtype=npdt) if want_dparams else None
    st = LIB.bnorm_backward_inference(ctypes.byref(d), ctypes.byref(o), ptr(dyl), ptr(xl), ptr(weight),
                                      ptr(rmean), ptr(rvar), ptr(dx), ptr(dw), ptr(db))
    return st, from_layout(dx, layout), dw, db


# ---- data ----

SHAPES = [
    (8, 5),            # (N, C): BatchNorm1d on 2-D input
    (2, 3),            # N = 2, m = 2: smallest valid batch, unbiased factor 2
    (3, 4, 10),        # (N, C, L)
    (2, 6, 1),         # N = 2, spatial 1, m = 2
    (4, 3, 5, 7),      # NCHW
    (2, 1, 9, 9),      # single channel
    (4, 9, 1, 1),      # 1x1 spatial, m = 4
    (2, 5, 3, 4),      # N = 2 NCHW
    (2, 4, 3, 3, 3),   # 3-D (N, C, D, H, W)
    (16, 37, 6, 5),    # larger, odd channel count (vector tails, threading)
]
MOMENTA = [0.1, None, 0.0, -1.2]


def gen_x(rng, shape):
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    std = rng.uniform(0.5, 2.0, c).reshape(bshape)
    off = rng.uniform(-3.0, 3.0, c).reshape(bshape)
    z = rng.standard_normal(shape)
    axes = tuple(i for i in range(len(shape)) if i != 1)
    if np.prod(shape) // c >= 2:
        # exact per-channel spread: with m = 2 a random draw can make a channel's variance tiny, and
        # then torch's own float32 result has errors far above 1e-5 (x - mean cancels). Keeping
        # |mean|/std <= 6 bounds the conditioning so both sides are accurate to well under 1e-5.
        z = (z - z.mean(axis=axes, keepdims=True)) / z.std(axis=axes, keepdims=True)
    return z * std + off


def module_for(shape, momentum, affine, track, tdt):
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
           5: torch.nn.BatchNorm3d}[len(shape)]
    m = cls(shape[1], eps=1e-5, momentum=momentum, affine=affine, track_running_stats=track)
    return m.to(tdt).train()


def l1_scale(terms, axes):
    """Scale of a per-channel sum: the largest per-channel L1 norm of its summands (>= 1)."""
    return max(1.0, float(np.max(np.sum(np.abs(np.asarray(terms, dtype=np.float64)), axis=axes))))


def scale_of(a):
    return max(1.0, float(np.max(np.abs(a)))) if np.size(a) else 1.0


class Base(unittest.TestCase):
    def assertClose(self, got, want, tol, what, scale=None):
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        self.assertEqual(got.shape, want.shape, "%s: shape" % what)
        if scale is None:
            scale = scale_of(want)
        atol = tol * scale
        ok = np.isclose(got, want, rtol=tol, atol=atol)
        if not ok.all():
            idx = np.argwhere(~ok)[:5]
            err = np.max(np.abs(got - want)[~ok]) if np.isfinite(got).all() else float("nan")
            details = ", ".join("%s: got %r want %r" % (tuple(int(v) for v in i), got[tuple(i)], want[tuple(i)])
                                for i in idx)
            self.fail("%s: %d/%d elements differ (rtol=%g atol=%g, max abs err %g); %s"
                      % (what, int((~ok).sum()), ok.size, tol, atol, err, details))


# ------------------------------------------------------------------------------------------------
# Training forward (two consecutive calls) and backward, generated per dtype x layout.
# ------------------------------------------------------------------------------------------------

class TrainingParity(Base):
    def _run_training_two_calls(self, dtype, layout):
        npdt, tdt, tol, _ = DTYPES[dtype]
        rng = np.random.default_rng(1234 + 10 * dtype + layout)
        ncases = 0
        for shape in SHAPES:
            combos = [(mom, aff, True, nbt0) for mom in MOMENTA for aff in (True, False)
                      for nbt0 in ((0, 2) if mom is None else (5,))]
            combos += [(0.1, aff, False, None) for aff in (True, False)]
            for momentum, affine, track, nbt0 in combos:
                with self.subTest(shape=shape, momentum=momentum, affine=affine, track=track, nbt0=nbt0):
                    self._one_training_case(rng, shape, dtype, layout, momentum, affine, track, nbt0)
                    ncases += 1
        self.assertGreater(ncases, 0)

    def _one_training_case(self, rng, shape, dtype, layout, momentum, affine, track, nbt0):
        npdt, tdt, tol, _ = DTYPES[dtype]
        C = shape[1]
        mod = module_for(shape, momentum, affine, track, tdt)
        w = b = None
        with torch.no_grad():
            if affine:
                mod.weight.copy_(torch.from_numpy(rng.uniform(-2, 2, C)))
                mod.bias.copy_(torch.from_numpy(rng.uniform(-2, 2, C)))
                w, b = np_copy(mod.weight.detach().numpy(), npdt), np_copy(mod.bias.detach().numpy(), npdt)
            rm = rv = nbt = None
            if track:
                mod.running_mean.copy_(torch.from_numpy(rng.uniform(-1, 1, C)))
                mod.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, C)))
                mod.num_batches_tracked.fill_(nbt0)
                rm, rv = np_copy(mod.running_mean.numpy(), npdt), np_copy(mod.running_var.numpy(), npdt)
                nbt = np.array([nbt0], dtype=np.int64)
            else:
                # not tracked: a num_batches_tracked counter passed anyway must stay untouched
                nbt = np.array([7], dtype=np.int64)
        bn_mom = float("nan") if momentum is None else momentum
        for call in (1, 2):
            x = gen_x(rng, shape).astype(npdt)
            with torch.no_grad():
                ty = mod(torch.from_numpy(x)).numpy()
            st, y, sm, si = bn_forward_training(x, dtype, layout, w, b, rm, rv, nbt, 1e-5, bn_mom)
            self.assertEqual(st, BNORM_OK, "call %d: status %d: %s" % (call, st, last_error()))
            self.assertClose(y, ty, tol, "call %d: y" % call)
            # saved statistics against x's own mean and 1/sqrt(biased var + eps)
            x64 = x.astype(np.float64)
            axes = tuple(i for i in range(x.ndim) if i != 1)
            self.assertClose(sm, x64.mean(axis=axes), tol, "call %d: save_mean" % call)
            self.assertClose(si, 1.0 / np.sqrt(x64.var(axis=axes) + 1e-5), tol, "call %d: save_invstd" % call)
            if track:
                self.assertClose(rm, mod.running_mean.numpy(), tol, "call %d: running_mean" % call)
                self.assertClose(rv, mod.running_var.numpy(), tol, "call %d: running_var" % call)
                self.assertEqual(int(nbt[0]), int(mod.num_batches_tracked.item()),
                                 "call %d: num_batches_tracked" % call)
            else:
                self.assertEqual(int(nbt[0]), 7, "num_batches_tracked changed without running stats")
        if affine:  # parameters are inputs: never written
            np.testing.assert_array_equal(w, mod.weight.detach().numpy().astype(npdt))
            np.testing.assert_array_equal(b, mod.bias.detach().numpy().astype(npdt))

    def _run_backward(self, dtype, layout):
        npdt, tdt, tol, _ = DTYPES[dtype]
        rng = np.random.default_rng(777 + 10 * dtype + layout)
        for shape in SHAPES:
            # (weight given, dweight/dbias requested)
            for with_weight, want_dparams in ((True, True), (False, True), (True, False), (False, False)):
                with self.subTest(shape=shape, weight=with_weight, dparams=want_dparams):
                    self._one_backward_case(rng, shape, dtype, layout, with_weight, want_dparams)

    def _one_backward_case(self, rng, shape, dtype, layout, with_weight, want_dparams):
        npdt, tdt, tol, _ = DTYPES[dtype]
        C = shape[1]
        x = gen_x(rng, shape).astype(npdt)
        g = rng.standard_normal(shape).astype(npdt)
        w_np = rng.uniform(-2, 2, C).astype(npdt) if with_weight else None
        b_np = rng.uniform(-2, 2, C).astype(npdt)
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        tw = torch.from_numpy(w_np.copy()).requires_grad_(True) if with_weight else None
        tb = torch.from_numpy(b_np.copy()).requires_grad_(True)
        ty = F.batch_norm(tx, None, None, tw, tb, training=True, momentum=0.1, eps=1e-5)
        (ty * torch.from_numpy(g)).sum().backward()
        st, y, sm, si = bn_forward_training(x, dtype, layout, w_np, b_np, None, None, None, 1e-5, 0.1)
        self.assertEqual(st, BNORM_OK, last_error())
        self.assertClose(y, ty.detach().numpy(), tol, "forward y")
        st, dx, dw, db = bn_backward(g, x, dtype, layout, w_np, sm, si, want_dparams)
        self.assertEqual(st, BNORM_OK, last_error())
        # dx = gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)): scale by |gamma*invstd|*|dy|
        gam = np.abs(w_np.astype(np.float64)) if with_weight else np.ones(C)
        dx_scale = max(scale_of(tx.grad.numpy()), float(np.max(gam * si)) * scale_of(g))
        self.assertClose(dx, tx.grad.numpy(), tol, "dx", scale=dx_scale)
        if want_dparams:
            # sums over m terms: scale by the per-channel L1 norm of the summands
            axes = tuple(i for i in range(x.ndim) if i != 1)
            l1 = float(np.max(np.sum(np.abs(g.astype(np.float64)), axis=axes)))
            self.assertClose(db, tb.grad.numpy(), tol, "dbias", scale=max(1.0, l1))
            xhat = (x.astype(np.float64) - sm.reshape((1, C) + (1,) * (x.ndim - 2))) * \
                si.reshape((1, C) + (1,) * (x.ndim - 2))
            l1w = float(np.max(np.sum(np.abs(g * xhat), axis=axes)))
            # torch gives no weight grad when weight is None; the reference is sum(dy * xhat)
            want_dw = tw.grad.numpy() if with_weight else np.sum(g.astype(np.float64) * xhat, axis=axes)
            self.assertClose(dw, want_dw, tol, "dweight", scale=max(1.0, l1w))


def _add_training_tests():
    for dtype, layout in itertools.product((BNORM_F32, BNORM_F64), (CHANNELS_FIRST, CHANNELS_LAST)):
        tag = "%s_%s" % (DTYPES[dtype][3], LAYOUT_NAMES[layout])

        def t_fwd(self, dtype=dtype, layout=layout):
            self._run_training_two_calls(dtype, layout)
        t_fwd.__doc__ = ("%s: y, running_mean/var, num_batches_tracked equal torch after two training "
                         "calls (momentum 0.1/None/0/-1.2, affine on/off, stats tracked/not)" % tag)
        setattr(TrainingParity, "test_%s_training_forward_two_calls_matches_torch" % tag, t_fwd)

        def t_bwd(self, dtype=dtype, layout=layout):
            self._run_backward(dtype, layout)
        t_bwd.__doc__ = "%s: bnorm_backward dx/dweight/dbias equal torch autograd" % tag
        setattr(TrainingParity, "test_%s_training_backward_matches_torch_autograd" % tag, t_bwd)


_add_training_tests()


# ------------------------------------------------------------------------------------------------
# Inference forward and backward.
# ------------------------------------------------------------------------------------------------

class InferenceParity(Base):
    def _run(self, dtype, layout):
        npdt, tdt, tol, _ = DTYPES[dtype]
        rng = np.random.default_rng(4321 + 10 * dtype + layout)
        shapes = SHAPES + [(1, 3), (1, 4, 1, 1)]  # m = 1 is fine in inference
        for shape in shapes:
            for affine in (True, False):
                with self.subTest(shape=shape, affine=affine):
                    self._one(rng, shape, dtype, layout, affine)

    def _one(self, rng, shape, dtype, layout, affine):
        npdt, tdt, tol, _ = DTYPES[dtype]
        C = shape[1]
        eps = 1e-3
        x = gen_x(rng, shape).astype(npdt)
        g = rng.standard_normal(shape).astype(npdt)
        rm = rng.uniform(-2, 2, C).astype(npdt)
        rv = rng.uniform(0.3, 3, C).astype(npdt)
        w = rng.uniform(-2, 2, C).astype(npdt) if affine else None
        b = rng.uniform(-2, 2, C).astype(npdt) if affine else None
        rm0, rv0 = rm.copy(), rv.copy()
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        tw = torch.from_numpy(w.copy()).requires_grad_(True) if affine else None
        tb = torch.from_numpy(b.copy()).requires_grad_(True) if affine else None
        ty = F.batch_norm(tx, torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy()), tw, tb,
                          training=False, momentum=0.1, eps=eps)
        (ty * torch.from_numpy(g)).sum().backward()
        st, y = bn_forward_inference(x, dtype, layout, w, b, rm, rv, eps)
        self.assertEqual(st, BNORM_OK, last_error())
        self.assertClose(y, ty.detach().numpy(), tol, "inference y")
        np.testing.assert_array_equal(rm, rm0, "running_mean modified by inference")
        np.testing.assert_array_equal(rv, rv0, "running_var modified by inference")
        st, dx, dw, db = bn_backward_inference(g, x, dtype, layout, w, rm, rv, eps, True)
        self.assertEqual(st, BNORM_OK, last_error())
        self.assertClose(dx, tx.grad.numpy(), tol, "inference dx")
        axes = tuple(i for i in range(x.ndim) if i != 1)
        bs = (1, C) + (1,) * (x.ndim - 2)
        xhat = (x.astype(np.float64) - rm.reshape(bs)) / np.sqrt(rv.astype(np.float64).reshape(bs) + eps)
        l1 = max(1.0, float(np.max(np.sum(np.abs(g.astype(np.float64)), axis=axes))))
        l1w = max(1.0, float(np.max(np.sum(np.abs(g * xhat), axis=axes))))
        if affine:
            self.assertClose(dw, tw.grad.numpy(), tol, "inference dweight", scale=l1w)
            self.assertClose(db, tb.grad.numpy(), tol, "inference dbias", scale=l1)
        else:
            self.assertClose(dw, np.sum(g * xhat, axis=axes), tol, "inference dweight (weight NULL)", scale=l1w)
            self.assertClose(db, np.sum(g.astype(np.float64), axis=axes), tol, "inference dbias (weight NULL)",
                             scale=l1)
        # dweight/dbias NULL: dx alone, identical to the run that computed them
        st, dx2, _, _ = bn_backward_inference(g, x, dtype, layout, w, rm, rv, eps, False)
        self.assertEqual(st, BNORM_OK, last_error())
        self.assertClose(dx2, tx.grad.numpy(), tol, "inference dx (dweight/dbias NULL)")


def _add_inference_tests():
    for dtype, layout in itertools.product((BNORM_F32, BNORM_F64), (CHANNELS_FIRST, CHANNELS_LAST)):
        tag = "%s_%s" % (DTYPES[dtype][3], LAYOUT_NAMES[layout])

        def t(self, dtype=dtype, layout=layout):
            self._run(dtype, layout)
        t.__doc__ = "%s: inference forward and backward equal torch (training=False) + autograd" % tag
        setattr(InferenceParity, "test_%s_inference_forward_and_backward_match_torch" % tag, t)


_add_inference_tests()


# ------------------------------------------------------------------------------------------------
# Errors, in-place use, numerical robustness, thread-count determinism.
# ------------------------------------------------------------------------------------------------

class ErrorsAndContracts(Base):
    def test_nan_momentum_without_num_batches_tracked_is_einval_and_writes_nothing(self):
        for dtype in (BNORM_F32, BNORM_F64):
            npdt = DTYPES[dtype][0]
            with self.subTest(dtype=DTYPES[dtype][3]):
                rng = np.random.default_rng(5)
                x = gen_x(rng, (4, 3, 2, 2)).astype(npdt)
                rm = np.zeros(3, npdt)
                rv = np.ones(3, npdt)
                st, y, sm, si = bn_forward_training(x, dtype, CHANNELS_FIRST, None, None, rm, rv, None,
                                                    1e-5, float("nan"))
                self.assertEqual(st, BNORM_EINVAL)
                self.assertNotEqual(last_error().strip(), "", "bnorm_last_error() empty after EINVAL")
                self.assertTrue(np.isnan(y).all(), "y written on failure")
                self.assertTrue(np.isnan(sm).all() and np.isnan(si).all(), "saved stats written on failure")
                np.testing.assert_array_equal(rm, np.zeros(3, npdt), "running_mean written on failure")
                np.testing.assert_array_equal(rv, np.ones(3, npdt), "running_var written on failure")

    def test_single_value_per_channel_in_training_is_einval_like_torch_valueerror(self):
        for dtype in (BNORM_F32, BNORM_F64):
            npdt, tdt = DTYPES[dtype][0], DTYPES[dtype][1]
            for shape in ((1, 3), (1, 3, 1), (1, 2, 1, 1)):
                with self.subTest(dtype=DTYPES[dtype][3], shape=shape):
                    x = np.arange(np.prod(shape), dtype=npdt).reshape(shape)
                    with self.assertRaises(ValueError):
                        F.batch_norm(torch.from_numpy(x), None, None, training=True)
                    rm = np.zeros(shape[1], npdt)
                    rv = np.ones(shape[1], npdt)
                    nbt = np.array([0], np.int64)
                    st, y, sm, si = bn_forward_training(x, dtype, CHANNELS_FIRST, None, None, rm, rv, nbt,
                                                        1e-5, 0.1)
                    self.assertEqual(st, BNORM_EINVAL, "m = 1 accepted in training")
                    self.assertNotEqual(last_error().strip(), "")
                    self.assertTrue(np.isnan(y).all(), "y written on failure")
                    self.assertEqual(int(nbt[0]), 0, "num_batches_tracked written on failure")
                    np.testing.assert_array_equal(rm, np.zeros(shape[1], npdt))
                    np.testing.assert_array_equal(rv, np.ones(shape[1], npdt))

    def test_version_is_major_minor_patch_and_last_error_is_a_string(self):
        # bnorm_last_error() and bnorm_version() return valid C strings; version is MAJOR.MINOR.PATCH
        self.assertIsInstance(LIB.bnorm_last_error(), bytes)
        v = LIB.bnorm_version().decode()
        parts = v.split(".")
        self.assertEqual(len(parts), 3, v)
        self.assertTrue(all(p.isdigit() for p in parts), v)

    def test_in_place_forward_and_backward_match_torch(self):
        # the header allows y == x and dx == dy
        for dtype, layout in itertools.product((BNORM_F32, BNORM_F64), (CHANNELS_FIRST, CHANNELS_LAST)):
            npdt, tdt, tol, tag = DTYPES[dtype]
            with self.subTest(dtype=tag, layout=LAYOUT_NAMES[layout]):
                rng = np.random.default_rng(99)
                shape = (4, 6, 3, 5)
                C = shape[1]
                x = gen_x(rng, shape).astype(npdt)
                g = rng.standard_normal(shape).astype(npdt)
                w = rng.uniform(-2, 2, C).astype(npdt)
                b = rng.uniform(-2, 2, C).astype(npdt)
                tx = torch.from_numpy(x.copy()).requires_grad_(True)
                tw = torch.from_numpy(w.copy()).requires_grad_(True)
                tb = torch.from_numpy(b.copy()).requires_grad_(True)
                ty = F.batch_norm(tx, None, None, tw, tb, training=True, eps=1e-5)
                (ty * torch.from_numpy(g)).sum().backward()
                d = make_desc(shape, dtype, layout)
                o = Options(1e-5, 0.1, 1)
                buf = to_layout(x, layout)
                sm = np.empty(C, npdt)
                si = np.empty(C, npdt)
                st = LIB.bnorm_forward_training(ctypes.byref(d), ctypes.byref(o), ptr(buf), ptr(w), ptr(b),
                                                None, None, None, ptr(buf), ptr(sm), ptr(si))
                self.assertEqual(st, BNORM_OK, last_error())
                self.assertClose(from_layout(buf, layout), ty.detach().numpy(), tol, "in-place y")
                xl = to_layout(x, layout)
                gbuf = to_layout(g, layout)
                dw = np.empty(C, npdt)
                db = np.empty(C, npdt)
                st = LIB.bnorm_backward(ctypes.byref(d), ptr(gbuf), ptr(xl), ptr(w), ptr(sm), ptr(si),
                                        ptr(gbuf), ptr(dw), ptr(db))
                self.assertEqual(st, BNORM_OK, last_error())
                dx_scale = max(scale_of(tx.grad.numpy()), float(np.max(np.abs(w) * si)) * scale_of(g))
                self.assertClose(from_layout(gbuf, layout), tx.grad.numpy(), tol, "in-place dx", scale=dx_scale)
                axes = (0, 2, 3)
                xhat = (x.astype(np.float64) - sm.reshape(1, C, 1, 1)) * si.reshape(1, C, 1, 1)
                self.assertClose(db, tb.grad.numpy(), tol, "dbias", scale=l1_scale(g, axes))
                self.assertClose(dw, tw.grad.numpy(), tol, "dweight", scale=l1_scale(g * xhat, axes))

    def test_f64_large_mean_offset_variance_is_numerically_stable_like_torch(self):
        # mean 1e5, std 1: E[x^2]-E[x]^2 in double would lose ~6 digits; torch's two-pass does not
        rng = np.random.default_rng(3)
        shape = (8, 3, 16, 16)
        x = rng.standard_normal(shape) + 1e5
        for layout in (CHANNELS_FIRST, CHANNELS_LAST):
            with self.subTest(layout=LAYOUT_NAMES[layout]):
                mod = module_for(shape, 0.1, False, True, torch.float64)
                with torch.no_grad():
                    ty = mod(torch.from_numpy(x)).numpy()
                rm = np.zeros(3)
                rv = np.ones(3)
                nbt = np.zeros(1, np.int64)
                st, y, sm, si = bn_forward_training(x, BNORM_F64, layout, None, None, rm, rv, nbt, 1e-5, 0.1)
                self.assertEqual(st, BNORM_OK, last_error())
                self.assertClose(y, ty, 1e-8, "y")
                self.assertClose(rv, mod.running_var.numpy(), 1e-8, "running_var")
                self.assertClose(rm, mod.running_mean.numpy(), 1e-10, "running_mean")

    def test_running_var_biased_when_running_var_unbiased_is_0(self):
        # ONNX mode: running_var gets the biased batch variance (torch's is unbiased: scale by (m-1)/m)
        rng = np.random.default_rng(11)
        for dtype in (BNORM_F32, BNORM_F64):
            npdt, tdt, tol, tag = DTYPES[dtype]
            with self.subTest(dtype=tag):
                shape = (3, 4, 5)
                x = gen_x(rng, shape).astype(npdt)
                rm = rng.uniform(-1, 1, 4).astype(npdt)
                rv = rng.uniform(0.5, 2, 4).astype(npdt)
                rv0 = rv.astype(np.float64)
                nbt = np.zeros(1, np.int64)
                st, _, _, _ = bn_forward_training(x, dtype, CHANNELS_FIRST, None, None, rm, rv, nbt, 1e-5, 0.25,
                                                  unbiased=0)
                self.assertEqual(st, BNORM_OK, last_error())
                bv = torch.from_numpy(x.astype(np.float64)).var(dim=(0, 2), unbiased=False).numpy()
                self.assertClose(rv, 0.75 * rv0 + 0.25 * bv, tol, "biased running_var")
                self.assertEqual(int(nbt[0]), 1)

    def test_results_bitwise_identical_for_thread_counts_1_2_3_and_default(self):
        shape = (16, 37, 6, 5)
        results = {}
        prev = LIB.bnorm_set_num_threads(1)
        try:
            for nt in (1, 2, 3, 0):
                LIB.bnorm_set_num_threads(nt)
                out = []
                for dtype, layout in itertools.product((BNORM_F32, BNORM_F64), (CHANNELS_FIRST, CHANNELS_LAST)):
                    npdt = DTYPES[dtype][0]
                    r = np.random.default_rng(21)
                    x = gen_x(r, shape).astype(npdt)
                    g = r.standard_normal(shape).astype(npdt)
                    w = r.uniform(-2, 2, 37).astype(npdt)
                    b = r.uniform(-2, 2, 37).astype(npdt)
                    rm = np.zeros(37, npdt)
                    rv = np.ones(37, npdt)
                    nbt = np.zeros(1, np.int64)
                    st, y, sm, si = bn_forward_training(x, dtype, layout, w, b, rm, rv, nbt, 1e-5, 0.1)
                    self.assertEqual(st, BNORM_OK, last_error())
                    st, dx, dw, db = bn_backward(g, x, dtype, layout, w, sm, si)
                    self.assertEqual(st, BNORM_OK, last_error())
                    out += [y, sm, si, rm, rv, dx, dw, db]
                results[nt] = out
        finally:
            LIB.bnorm_set_num_threads(prev)
        for nt in (2, 3, 0):
            for i, (a, b) in enumerate(zip(results[1], results[nt])):
                self.assertTrue(np.array_equal(a.view(np.uint8), b.view(np.uint8)),
                                "output %d differs bitwise between 1 and %s threads" % (i, nt or "default"))


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--lib", required=True, help="path of libbnorm.so")
    args, rest = ap.parse_known_args()
    global LIB
    LIB = load_lib(args.lib)
    torch.set_num_threads(4)
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    res = prog.result
    if not res.wasSuccessful() or res.testsRun == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
