"""Exact int16 dot products in 32-bit lanes (``pmaddwd``), for the portable LM's CPU kernel (numba).

The kernel's matrix-vector products multiply int16 weights ``|w| <= 2**15 - 1`` by activations
``|x| <= CLAMP = 2**20 - 1``. :func:`split` writes each activation as two int16 limbs,
``x = hi * 2**11 + lo`` with ``lo = x & 2047`` in ``[0, 2047]`` and ``hi = x >> 11`` in
``[-512, 511]``; :func:`dot` sums ``w * lo`` and ``w * hi`` in 16 int32 lanes, each lane adding two
products per 32 elements (x86's ``pmaddwd``: 32 products an instruction, where int64 lanes give 8).

Exactness: a product ``|w * lo| <= 32767 * 2047 < 2**26`` (``|w * hi| <= 32767 * 512``), and a lane
adds ``count / 16`` products, so for ``count <= CHUNK = 512`` every partial lane sum stays below
``32 * 32767 * 2047 = 2,146,369,568 < 2**31``: no int32 lane overflows, the lanes are then summed
in int64, and the result is the int64 sum ``sum(w * x)`` exactly, on every instruction set.

Instruction sets (chosen for the compile target numba uses): AVX-512BW's ``vpmaddwd`` (fused with
the add into ``vpdpwssd`` where VNNI exists), AVX2's on two halves, elsewhere the same arithmetic
in plain LLVM vector code (even and odd elements widened, multiplied and added).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, config, types
from numba.extending import intrinsic

LANES = 32
"""int16 elements per step: :func:`dot`'s ``count`` and the weights' padded rows are multiples of it."""
CHUNK = 512
"""The most elements one :func:`dot` call may sum (the int32 lanes' bound, see above)."""
LIMB_BITS = 11
ISAS = ("avx512bw", "avx2", "generic")


def target_isa() -> str:
    """The widest of :data:`ISAS` among the features numba compiles for (``NUMBA_CPU_FEATURES``
    when set, else the host's, as numba's JIT does)."""
    features = config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    enabled = set(features.split(","))
    return next((isa for isa in ISAS[:-1] if f"+{isa}" in enabled), "generic")


def padded(weights: np.ndarray) -> np.ndarray:
    """int16 ``weights`` with their last axis zero-padded to a multiple of :data:`LANES`."""
    n = weights.shape[-1]
    out = np.zeros(weights.shape[:-1] + (-(-n // LANES) * LANES,), dtype=np.int16)
    out[..., :n] = weights
    return out


@njit(cache=True, nogil=True)
def split(x, lo, hi):
    """``lo[i], hi[i] = x[i] & 2047, x[i] >> 11`` (int16) for the int64 activations ``x``."""
    for i in range(x.shape[0]):
        lo[i] = x[i] & ((1 << LIMB_BITS) - 1)
        hi[i] = x[i] >> LIMB_BITS


def make_dot(isa: str):
    """The :func:`dot` intrinsic built for ``isa`` (one of :data:`ISAS`; tests build each)."""
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")

    @intrinsic
    def dot(typingctx, w, lo, hi, start, count):
        """``sum(w[j] * (hi[j] * 2**11 + lo[j]))`` over ``j`` in ``[start, start + count)``, as int64.

        ``w``, ``lo``, ``hi``: C-contiguous int16 arrays; ``count``: a multiple of :data:`LANES`,
        at most :data:`CHUNK`; ``lo`` in ``[0, 2047]``, ``hi`` in ``[-512, 511]``, ``|w| < 2**15``."""
        sig = types.int64(w, lo, hi, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
            v32i16, v16i32, v16i64 = ir.VectorType(i16, 32), ir.VectorType(i32, 16), ir.VectorType(i64, 16)
            data = [context.make_array(signature.args[k])(context, builder, args[k]).data for k in range(3)]
            start, count = args[3], args[4]
            pairs = _pair_products(builder, isa)
            acc_lo = cgutils.alloca_once_value(builder, ir.Constant(v16i32, None))
            acc_hi = cgutils.alloca_once_value(builder, ir.Constant(v16i32, None))

            def load(pointer, offset):
                address = builder.bitcast(builder.gep(pointer, [offset]), v32i16.as_pointer())
                return builder.load(address, align=2)

            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), count, ir.Constant(i64, LANES)) as (i, _):
                j = builder.add(start, i)
                weights = load(data[0], j)
                builder.store(builder.add(builder.load(acc_lo), pairs(weights, load(data[1], j))), acc_lo)
                builder.store(builder.add(builder.load(acc_hi), pairs(weights, load(data[2], j))), acc_hi)
            reduce = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [v16i64]), "llvm.vector.reduce.add.v16i64")
            s_lo = builder.call(reduce, [builder.sext(builder.load(acc_lo), v16i64)])
            s_hi = builder.call(reduce, [builder.sext(builder.load(acc_hi), v16i64)])
            return builder.add(builder.shl(s_hi, ir.Constant(i64, LIMB_BITS)), s_lo)

        return sig, codegen

    return dot


def _pair_products(builder, isa: str):
    """``f(a, b)``: the 16 int32 sums ``a[2k] * b[2k] + a[2k + 1] * b[2k + 1]`` of two ``<32 x i16>``."""
    i16, i32 = ir.IntType(16), ir.IntType(32)
    v32i16, v16i16, v16i32 = ir.VectorType(i16, 32), ir.VectorType(i16, 16), ir.VectorType(i32, 16)
    v8i32 = ir.VectorType(i32, 8)

    def mask(indices) -> ir.Constant:
        return ir.Constant(ir.VectorType(i32, len(indices)), list(indices))

    if isa == "avx512bw":
        madd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i32, [v32i16, v32i16]),
                                              "llvm.x86.avx512.pmaddw.d.512")
        return lambda a, b: builder.call(madd, [a, b])
    if isa == "avx2":
        madd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                              "llvm.x86.avx2.pmadd.wd")
        low, high = mask(range(16)), mask(range(16, 32))

        def avx2(a, b):
            first = builder.call(madd, [builder.shuffle_vector(a, a, low), builder.shuffle_vector(b, b, low)])
            second = builder.call(madd, [builder.shuffle_vector(a, a, high), builder.shuffle_vector(b, b, high)])
            return builder.shuffle_vector(first, second, mask(range(16)))

        return avx2
    even, odd = mask(range(0, 32, 2)), mask(range(1, 32, 2))

    def generic(a, b):
        def widened(v, m):
            return builder.sext(builder.shuffle_vector(v, v, m), v16i32)

        evens = builder.mul(widened(a, even), widened(b, even))
        return builder.add(evens, builder.mul(widened(a, odd), widened(b, odd)))

    return generic


dot = make_dot(target_isa())
