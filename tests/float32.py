"""How close two runs of the same float32 network must be, on any x86-64 CPU.

float32 rounds every operation to a unit roundoff of u = 2**-24 (6.0e-8). TensorFlow's oneDNN kernels are
chosen per instruction set (AVX2, AVX-512, AMX) and per batch size, and each choice sums the terms of a
convolution or a dense layer in another order. Reordering a sum of K rounded terms moves it by about
sqrt(K) * u times the size of its terms when the rounding errors are random (the usual case), and by at
most about K * u in the worst case. musicnn's longest sums have K ~ 4e3 terms (the mid-end's width-7
convolutions over 561 channels), so one layer can move by sqrt(4e3) * 6e-8 = 4e-6 of the size of its inputs,
and the eight layers between the log-mel and the outputs, with batch norms that rescale by up to ~10,
compound that to a few 1e-5 of the size of an output.

So the tolerance is relative to each output's *scale* (its largest magnitude), not to each value: a value
near zero inherits the rounding of the large terms that cancelled to make it. One run measured on an AMD
EPYC (AVX2) against goldens from an AVX-512 machine: pooled features (scale ~170) differed by 1.1e-4, i.e.
7e-7 of their scale. `SCALE_RTOL = 1e-4` leaves two to three times the estimate above and a hundred times
what was seen, and it is still a thousand times below what a porting mistake costs (a wrong padding, a
missing batch norm or a swapped axis moves outputs by 10 % of their scale or more).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SCALE_RTOL", "assert_close_scaled"]

SCALE_RTOL = 1e-4


def assert_close_scaled(got: Any, want: Any, *, rtol: float = SCALE_RTOL, what: str = "") -> None:
    """`|got - want| <= rtol * max|want|` everywhere (shapes must match)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=0.0, atol=rtol * max(scale, 1e-30),
                               err_msg=f"{what} (scale {scale:.4g}, tolerance {rtol:g} of it)")
