"""Fixed-point format of the portable LM and its integer tables (built exactly, the same everywhere).

Activations are integers with ``FRAC`` fractional bits, clamped to ``+-CLAMP``; the tables
(cosine, exp, GELU, the position embedding's frequencies) are built with Python integers and
``decimal`` (correctly rounded), never the platform's libm.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import numpy as np

FRAC = 12
ONE = 1 << FRAC
CLAMP = (1 << 20) - 1
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
_COS_BITS = 16


@functools.lru_cache(maxsize=1)
def tables() -> dict:
    """Integer tables for cos, exp and GELU, from Python integers and decimal (exact, portable)."""
    with localcontext() as ctx:
        ctx.prec = 50
        # cos(2 pi j / 2**16) by the Chebyshev recurrence in 62-bit fixed point (Python ints).
        steps = 1 << _COS_BITS
        theta = 2 * _PI / steps
        c1 = sum(((-1) ** n) * theta ** (2 * n) / _factorial(2 * n) for n in range(12))
        scale = 1 << 62
        c1_fixed = int((c1 * scale).to_integral_value())
        cos = [scale, c1_fixed]
        for _ in range(steps // 4 - 1):
            cos.append((2 * c1_fixed * cos[-1]) // scale - cos[-2])
        quarter = [(v + (1 << (61 - FRAC))) >> (62 - FRAC) for v in cos[: steps // 4 + 1]]
        table = np.empty(steps, dtype=np.int64)
        for j in range(steps):
            q, r = divmod(j, steps // 4)
            value = [quarter[r], -quarter[steps // 4 - r], -quarter[r], quarter[steps // 4 - r]][q]
            table[j] = value
        # exp(-d / 2**12) = exp(-hi * 256 / 2**12) * exp(-lo / 2**12), 30 fractional bits.
        exp_hi = np.array([int(((Decimal(-h * 256) / ONE).exp() * (1 << 30)).to_integral_value())
                           for h in range(256)], dtype=np.int64)
        exp_lo = np.array([int(((Decimal(-lo) / ONE).exp() * (1 << 30)).to_integral_value())
                           for lo in range(256)], dtype=np.int64)
        # GELU (tanh form) on [-8, 8) in steps of 1/256, 12 fractional bits.
        k = (2 / _PI).sqrt()
        gelu = np.empty(4096, dtype=np.int64)
        for i in range(4096):
            x = Decimal(i - 2048) / 256
            u = 2 * k * (x + Decimal("0.044715") * x**3)
            t = 1 - 2 / (u.exp() + 1) if u < 60 else Decimal(1)
            gelu[i] = int((x * (1 + t) / 2 * ONE).to_integral_value())
        # Frequencies of Meta's position embedding, as 64-bit fractions of a turn.
        turns = np.empty(100, dtype=np.uint64)
        ln_period = Decimal(10000).ln()
        for i in range(100):
            freq = (-ln_period * i / 99).exp()
            turns[i] = int((freq / (2 * _PI) * (1 << 64)).to_integral_value()) % (1 << 64)
    return {"cos": table, "exp_hi": exp_hi, "exp_lo": exp_lo, "gelu": gelu, "turns": turns}


def _factorial(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out


def fixed(array, bits: int, limit: int, dtype) -> np.ndarray:
    """``array`` rounded to ``bits`` fractional bits, clamped to ``+-limit``, as ``dtype``."""
    values = np.rint(np.asarray(array, dtype=np.float64) * (1 << bits))
    return np.clip(values, -limit, limit).astype(dtype)
