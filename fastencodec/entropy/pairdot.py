"""Exact int16 matrix-vector products in 32-bit lanes (``pmaddwd``), for the portable LM's CPU kernel.

The kernel's matrix-vector products multiply int16 weights ``|w| <= 2**15 - 1`` by activations
``|x| <= CLAMP = 2**20 - 1``. :func:`split` writes each activation as two int16 limbs,
``x = hi * 2**10 + lo`` with ``lo = x & 1023`` in ``[0, 1023]`` and ``hi = x >> 10`` in
``[-1024, 1023]``. The weights are stored by groups of 16 outputs and input pairs
(:func:`paired`: ``[n_out / 16, n_in / 2, 16, 2]``), so that one 32-lane int16 vector holds two
inputs' weights for 16 outputs and a group's vectors follow one another in memory; x86's ``pmaddwd`` then
multiplies it by a limb pair broadcast to every lane and adds each output's two products into its
int32 lane (32 products an instruction, where int64 lanes give 8), with no horizontal sums.

Exactness: a product ``|w * lo|`` or ``|w * hi|`` is at most ``32767 * 1024``, and a lane (one
output) adds the products of at most ``CHUNK = 64`` inputs before it is added into an int64
accumulator, so every partial lane sum stays within ``64 * 32767 * 1024 = 2,147,418,112 < 2**31``:
no int32 lane overflows, and each output is the int64 sum ``sum(w * x)`` exactly, on every
instruction set.

Instruction sets (chosen for the compile target numba uses): AVX-512BW's ``vpmaddwd`` (fused with
the add into ``vpdpwssd`` where VNNI exists), AVX2's on two halves, elsewhere the same arithmetic
in plain LLVM vector code (even and odd elements widened, multiplied and added).

numba's on-disk cache of ``portable_kernel``'s functions holds these products compiled in, and
numba checks only the calling file's time stamp: after editing this module, delete the ``*.nbi`` /
``*.nbc`` files of ``fastencodec/entropy/__pycache__`` (a fresh install has none).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, config, types
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

OUTPUTS = 16
"""Outputs a vector of lanes holds: :func:`paired` pads the outputs to a multiple of it."""
BLOCK = 4
"""Vectors of outputs one pass computes (independent accumulators: the adds' latency is hidden)."""
CHUNK = 64
"""Inputs an int32 lane sums before it is added into int64 (the lanes' bound, see above)."""
LIMB_BITS = 10
ISAS = ("avx512bw", "avx2", "generic")


def compile_features() -> str:
    """The CPU features numba's JIT compiles for, as its codegen picks them: ``NUMBA_CPU_FEATURES``
    when set, else the host's without the AVX ones where numba turns AVX off (``NUMBA_ENABLE_AVX=0``,
    or by default on CPUs LLVM cannot name); an intrinsic of a feature missing here would abort
    LLVM, so :func:`target_isa` chooses from these."""
    return config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()


def target_isa() -> str:
    """The widest of :data:`ISAS` among :func:`compile_features`."""
    enabled = set(compile_features().split(","))
    return next((isa for isa in ISAS[:-1] if f"+{isa}" in enabled), "generic")


def paired(weights: np.ndarray) -> np.ndarray:
    """int16 ``weights [..., n_out, n_in]`` (``n_in`` even) as ``[..., n_pad / 16, n_in / 2, 16, 2]``:
    groups of :data:`OUTPUTS` outputs (zero-padded to ``n_pad``), by input pairs."""
    *lead, n_out, n_in = weights.shape
    if n_in % 2:
        raise ValueError(f"paired weights need an even input count, got {n_in}")
    n_pad = -(-n_out // OUTPUTS) * OUTPUTS
    rows = np.zeros((*lead, n_pad, n_in), dtype=np.int16)
    rows[..., :n_out, :] = weights
    groups = rows.reshape(*lead, n_pad // OUTPUTS, OUTPUTS, n_in // 2, 2)
    return np.ascontiguousarray(np.swapaxes(groups, -3, -2))


@njit(cache=True, nogil=True)
def split(x, lo, hi):
    """``lo[i], hi[i] = x[i] & 1023, x[i] >> 10`` (int16) for the int64 activations ``x``."""
    for i in range(x.shape[0]):
        lo[i] = x[i] & ((1 << LIMB_BITS) - 1)
        hi[i] = x[i] >> LIMB_BITS


def make_products(isa: str, vectors: int):
    """The :func:`products` intrinsic built for ``isa`` (one of :data:`ISAS`) and ``vectors``
    vectors of :data:`OUTPUTS` outputs (tests build each)."""
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")

    @intrinsic
    def products(typingctx, w, lo, hi, group, out):
        """``out[16 g + j] = sum(w[g, p, j, t] * x[2p + t])`` for the groups ``g`` in
        ``[group, group + vectors)``, with ``x = hi * 2**10 + lo``: int64 sums, exact (see the module).

        ``w``: C-contiguous :func:`paired` weights ``[n_groups, n_pairs, 16, 2]``; ``lo``, ``hi``:
        C-contiguous int16 limbs of ``2 * n_pairs`` activations (:func:`split`); ``out``: int64, at
        least ``16 * (group + vectors)`` long (other arrays do not type: the code reads raw memory)."""
        if not (_c_array(w, types.int16, 4) and _c_array(lo, types.int16, 1) and _c_array(hi, types.int16, 1)
                and _c_array(out, types.int64, 1) and isinstance(group, types.Integer)):  # fmt: skip
            return None
        sig = types.none(w, lo, hi, types.int64, out)

        def codegen(context, builder, signature, args):
            i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
            v32i16, v16i32, v16i64 = ir.VectorType(i16, 32), ir.VectorType(i32, 16), ir.VectorType(i64, 16)
            matrix = context.make_array(signature.args[0])(context, builder, args[0])
            n_pairs = cgutils.unpack_tuple(builder, matrix.shape, 4)[1]
            limbs = [builder.bitcast(context.make_array(signature.args[k])(context, builder, args[k]).data,
                                     i32.as_pointer()) for k in (1, 2)]  # a limb pair as one int32
            group = args[3]
            result = context.make_array(signature.args[4])(context, builder, args[4]).data
            pairs = _pair_products(builder, isa)
            zero32, zero64 = ir.Constant(v16i32, None), ir.Constant(v16i64, None)
            wide = [cgutils.alloca_once_value(builder, zero64) for _ in range(vectors)]
            lanes = [[cgutils.alloca_once_value(builder, zero32) for _ in limbs] for _ in range(vectors)]
            shift = ir.Constant(v16i64, [LIMB_BITS] * OUTPUTS)
            step = ir.Constant(i64, 2 * OUTPUTS)  # int16 elements of a group per input pair
            chunk = ir.Constant(i64, CHUNK // 2)
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), n_pairs, chunk) as (c, _):
                end = builder.add(c, chunk)
                end = builder.select(builder.icmp_signed("<", end, n_pairs), end, n_pairs)
                for acc in lanes:
                    for lane in acc:
                        builder.store(zero32, lane)
                with cgutils.for_range_slice(builder, c, end, ir.Constant(i64, 1)) as (p, _):
                    broadcast = []
                    for limb in limbs:
                        pair = builder.insert_element(ir.Constant(v16i32, None), builder.load(builder.gep(limb, [p])),
                                                      ir.Constant(i32, 0))
                        pair = builder.shuffle_vector(pair, pair, ir.Constant(v16i32, [0] * OUTPUTS))
                        broadcast.append(builder.bitcast(pair, v32i16))
                    for v, acc in enumerate(lanes):
                        g = builder.add(group, ir.Constant(i64, v))
                        offset = builder.mul(builder.add(builder.mul(g, n_pairs), p), step)
                        address = builder.bitcast(builder.gep(matrix.data, [offset]), v32i16.as_pointer())
                        weights = builder.load(address, align=2)
                        for part, lane in zip(broadcast, acc):
                            builder.store(builder.add(builder.load(lane), pairs(weights, part)), lane)
                for total, (acc_lo, acc_hi) in zip(wide, lanes):
                    high = builder.shl(builder.sext(builder.load(acc_hi), v16i64), shift)
                    chunk_sum = builder.add(high, builder.sext(builder.load(acc_lo), v16i64))
                    builder.store(builder.add(builder.load(total), chunk_sum), total)
            for v, total in enumerate(wide):
                offset = builder.mul(builder.add(group, ir.Constant(i64, v)), ir.Constant(i64, OUTPUTS))
                address = builder.bitcast(builder.gep(result, [offset]), v16i64.as_pointer())
                builder.store(builder.load(total), address, align=8)
            return context.get_dummy_value()

        return sig, codegen

    return products


def _c_array(arg, dtype, ndim: int) -> bool:
    """Whether the numba type ``arg`` is a C-contiguous array of ``dtype`` and ``ndim`` dimensions."""
    return isinstance(arg, types.Array) and arg.dtype == dtype and arg.ndim == ndim and arg.layout == "C"


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


products = make_products(target_isa(), BLOCK)
product = make_products(target_isa(), 1)


@njit(cache=True, nogil=True)
def matvec(w, lo, hi, out):
    """``out[:n_pad] = W x`` (int64, exact) for :func:`paired` weights ``w`` and the limbs of ``x``."""
    n_groups = w.shape[0]
    full = n_groups - n_groups % BLOCK
    for group in range(0, full, BLOCK):
        products(w, lo, hi, group, out)
    for group in range(full, n_groups):
        product(w, lo, hi, group, out)
