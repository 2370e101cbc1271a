"""One LSTM layer's time steps in one launch on a cluster of multiprocessors (CUDA C++, Hopper).

The codec's LSTM is a chain of dependent time steps; launched a step at a time (or with a barrier
across the whole GPU), every step pays round trips of the hidden state through L2. Here a
thread-block cluster of ``width / 32`` blocks (16 for the 24 and 48 kHz models' width 512) runs a
block of items through every step of one layer: each block keeps its 32 hidden units' recurrent
weights on chip for the whole sequence, holds their cell state in registers, and copies its new
hidden state into every block's shared memory (distributed shared memory) with one bulk copy a
block, which counts its bytes on that block's barrier: a block waits for exactly the data it
needs, with no barrier across the cluster. Two kernels share that frame:

- float16 (``fp16``, :data:`ITEMS` items a cluster): tensor-core products (``mma.sync m16n8k16``,
  float32 sums), rows the weights' (units and gates), columns items; sixteen warps, two a m-tile
  of four units' four gates, one a half of the sum, the weights in registers. Each warp sums its
  half of the width in two interleaved parts (even and odd 16-wide chunks), the two halves are
  added, then the input projection (with both biases, computed before for every step). The hidden
  state is rounded to float16 between steps, as the outputs are.
- float32 (``exact``, two kernels of :data:`FLOAT_ITEMS` items a cluster, :func:`variant` picks one
  by the batch): IEEE float32 products and sums on the FMA units (fused multiply-adds); each thread
  sums one eighth of the width for two rows (a gate pair of one unit) and every item, each column in
  order, the weights of the first 32 (or 28) columns of its eighth in registers and the rest in shared
  memory; the eight partial sums are added in order, then the input projection.

The cell is updated in float32. An item's results never depend on the other items of its block
or batch (columns do not mix, and each item's sums are in the same order whatever the others).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch

from fastencodec.kernels import nvrtc

ITEMS = 16
"""Items a cluster computes (the tensor-core product's columns: two n-tiles of 8)."""

THREADS = 512
"""Threads a block of either kernel: sixteen warps (float16: two for each m-tile of four hidden
units' four gates, one a k-half of its sums; float32: two for each eighth of the sums)."""

_HELPERS = r"""
#define H __WIDTH__
#define RANKS (H / 32)
#define KHALF (H / 32)
#define SEG 48
#define BUF (RANKS * 16 * SEG)
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
extern __shared__ __align__(16) unsigned char smem[];  // a block's dynamic shared memory

__device__ __forceinline__ u32 pack_half2(float lo, float hi) {
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}
__device__ __forceinline__ u16 to_half(float x) {
    u16 d;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(d) : "f"(x));
    return d;
}
__device__ __forceinline__ float from_half(u16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
}
__device__ __forceinline__ void mma(float4& d, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d.x), "+f"(d.y), "+f"(d.z), "+f"(d.w)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ u32 map_rank(u32 address, u32 rank) {
    u32 d;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(d) : "r"(address), "r"(rank));
    return d;
}
__device__ __forceinline__ void barrier_init(u32 bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void barrier_expect(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void barrier_wait(u32 bar, u32 parity) {
    u32 done = 0;
    while (!done)
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2; "
                     "selp.u32 %0, 1, 0, p; }"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// Thread 0: both hidden-state barriers [parity] at bars, each expecting one fill of bytes.
__device__ __forceinline__ void barriers_ready(u32 bars, u32 bytes) {
    if (threadIdx.x == 0) {
        barrier_init(bars);
        barrier_init(bars + 8);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        barrier_expect(bars, bytes);
        barrier_expect(bars + 8, bytes);
    }
}
// One bulk copy of bytes from this block's slice to address to of block rank, counted on its barrier bar.
__device__ __forceinline__ void push(u32 to, const void* slice, u32 bytes, u32 bar, u32 rank) {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    asm volatile("cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(map_rank(to, rank)), "r"(shared_address(slice)), "r"(bytes), "r"(map_rank(bar, rank))
                 : "memory");
}

"""

_HALF = r"""
// This warp's k-half of the products of its m-tile with the hidden state of one or two n-tiles of items.
template <bool TWO>
__device__ __forceinline__ void products(const u32 (*a)[4], const u16* hb, float4* p) {
    float4 acc[2][2];
    #pragma unroll
    for (int n = 0; n < 2; ++n)
        #pragma unroll
        for (int e = 0; e < 2; ++e) acc[n][e] = make_float4(0.f, 0.f, 0.f, 0.f);
    #pragma unroll
    for (int k = 0; k < KHALF; ++k) {
        const u16* at = hb + (k >> 1) * 16 * SEG + 16 * (k & 1);
        const uint2 b0 = *(const uint2*)at;
        mma(acc[0][k & 1], a[k], b0.x, b0.y);
        if (TWO) {
            const uint2 b1 = *(const uint2*)(at + 8 * SEG);
            mma(acc[1][k & 1], a[k], b1.x, b1.y);
        }
    }
    #pragma unroll
    for (int n = 0; n < 2; ++n)
        p[n] = make_float4(acc[n][0].x + acc[n][1].x, acc[n][0].y + acc[n][1].y,
                           acc[n][0].z + acc[n][1].z, acc[n][0].w + acc[n][1].w);
}

// gates [batch, steps, 4H] float32 (gate-major: i, f, g, o); weights: cluster_lstm.fragments' layout;
// out [batch, steps, H] float16 = h (+ res, [batch, steps, H] float16, when has_res)
extern "C" __global__ void __cluster_dims__(RANKS, 1, 1) __launch_bounds__(512, 1)
lstm_layer(const float* __restrict__ gates, const u32* __restrict__ weights, u16* __restrict__ out,
           const u16* __restrict__ res, int batch, int steps, int has_res)
{
    u16* hbuf = (u16*)smem;                                   // [parity][block][item][SEG]: h of the step before
    u16* slices = hbuf + 2 * BUF;                             // [parity][item][SEG]: this block's new h
    float4* red = (float4*)(slices + 2 * 16 * SEG);           // [m-tile][n-tile][lane]: partial sums
    unsigned long long* bars = (unsigned long long*)(red + 8 * 2 * 32);  // [parity]: hbuf filled
    const u32 rank = cluster_rank();
    const int block = blockIdx.x / RANKS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int mt = warp & 7, kh = warp >> 3;
    const int items = min(16, batch - 16 * block);
    const bool two = items > 8;
    const u32 bytes = RANKS * items * 2 * SEG;                    // a fill of hbuf: every block's units of every item
    u32 a[KHALF][4];                                          // this warp's weights: rows of its m-tile, its k-half
    {
        const u32* mine = weights + (u64)(rank * 16 + warp) * (KHALF * 4 * 32) + lane;
        #pragma unroll
        for (int k = 0; k < KHALF; ++k)
            #pragma unroll
            for (int j = 0; j < 4; ++j) a[k][j] = mine[(k * 4 + j) * 32];
    }
    for (int i = threadIdx.x; i < (2 * BUF + 2 * 16 * SEG) / 2; i += 512) ((u32*)hbuf)[i] = 0u;
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // the zeros, before other blocks' copies
    const u32 hbuf_at = shared_address(hbuf), bars_at = shared_address(bars);
    barriers_ready(bars_at, bytes);
    // the cell this thread updates (warps of k-half n own n-tile n): unit, item
    const bool cells = kh == 0 || two;
    const bool low = g < 4;
    const int unit_in = 4 * mt + (g & 3);                    // of this block's 32
    const int unit = 32 * rank + unit_in;
    const int item = 8 * kh + 2 * t + (g >> 2);
    const bool live = cells && item < items;
    const int at_slice = item * SEG + 16 * (unit_in >> 4) + 4 * ((unit_in >> 1) & 3) + 2 * ((unit_in >> 3) & 1)
                         + (unit_in & 1);                     // units in the order the products read them
    const u64 row = (u64)(16 * block + item) * steps;
    float gin[4] = {0.f, 0.f, 0.f, 0.f};
    u16 rin = 0;
    float c = 0.f;
    if (live) {
        #pragma unroll
        for (int q = 0; q < 4; ++q) gin[q] = gates[row * 4 * H + q * H + unit];
        if (has_res) rin = res[row * H + unit];
    }
    __syncthreads();
    cluster_sync();                                           // every block's barriers are ready
    const u16* hb = hbuf + g * SEG + 4 * t + (KHALF / 2) * kh * 16 * SEG;  // this warp's k-half
    for (int s = 0; s < steps; ++s) {
        const int parity = s & 1;
        if (s > 0) {
            barrier_wait(bars_at + 8 * parity, ((s - 1) >> 1) & 1);
            if (threadIdx.x == 0) barrier_expect(bars_at + 8 * parity, bytes);  // for step s + 1's copies
        }
        float4 p[2];
        if (two) products<true>(a, hb + parity * BUF, p);
        else products<false>(a, hb + parity * BUF, p);
        // the two k-halves of a m-tile meet: each warp hands the other the n-tile that one owns
        if (kh == 1) red[(mt * 2 + 0) * 32 + lane] = p[0];
        else if (two) red[(mt * 2 + 1) * 32 + lane] = p[1];
        asm volatile("bar.sync %0, 64;" :: "r"(1 + mt) : "memory");
        float h = 0.f;
        u16* slice = slices + (s & 1) * 16 * SEG;             // two: a copy may still read the last
        if (cells) {
            const float4 o = red[(mt * 2 + kh) * 32 + lane];
            const float4 q = kh == 0 ? make_float4(p[0].x + o.x, p[0].y + o.y, p[0].z + o.z, p[0].w + o.w)
                                     : make_float4(o.x + p[1].x, o.y + p[1].y, o.z + p[1].z, o.w + p[1].w);
            // lane g < 4 holds gates i and g of unit g, lane g + 4 gates f and o: each takes one item
            const float r0 = __shfl_xor_sync(0xffffffffu, low ? q.y : q.x, 16);
            const float r1 = __shfl_xor_sync(0xffffffffu, low ? q.w : q.z, 16);
            const float pi = (low ? q.x : r0) + gin[0], pf = (low ? r0 : q.y) + gin[1];
            const float pg = (low ? q.z : r1) + gin[2], po = (low ? r1 : q.w) + gin[3];
            c = sigmoid(pf) * c + sigmoid(pi) * tanhf(pg);
            h = sigmoid(po) * tanhf(c);
            slice[at_slice] = to_half(h);
        }
        __syncthreads();
        if (s + 1 < steps) {                                  // this block's units into every block's next buffer
            const u32 to = hbuf_at + ((1 - parity) * BUF + rank * 16 * SEG) * 2, bar = bars_at + 8 * (1 - parity);
            if (threadIdx.x < RANKS) push(to, slice, items * SEG * 2, bar, threadIdx.x);  // one copy to each block
        }
        if (live) {
            const u64 o = row * H + (u64)s * H + unit;
            out[o] = has_res ? to_half(h + from_half(rin)) : to_half(h);
            if (s + 1 < steps) {
                #pragma unroll
                for (int q = 0; q < 4; ++q) gin[q] = gates[(row + s + 1) * 4 * H + q * H + unit];
                if (has_res) rin = res[o + H];
            }
        }
    }
    cluster_sync();                                           // no block leaves while another may write to it
}
"""

_FLOAT = r"""
// float32 (IEEE) kernels: FITEMS items a cluster, weights [RANKS][8][KT][128] float32 (float_layout), the first
// KR of each thread's KT in registers, the rest in shared memory; hbuf [parity][H][FITEMS] float32.
#define KT (H / 8)

// The FITEMS hidden-state values of one column (an even count, 8-byte aligned; 16-byte when a multiple of 4).
template <int FITEMS>
__device__ __forceinline__ void column(const float* at, float (&v)[FITEMS]) {
    if constexpr (FITEMS % 4 == 0) {
        #pragma unroll
        for (int q = 0; q < FITEMS / 4; ++q) {
            const float4 x = ((const float4*)at)[q];
            v[4 * q] = x.x, v[4 * q + 1] = x.y, v[4 * q + 2] = x.z, v[4 * q + 3] = x.w;
        }
    } else {
        #pragma unroll
        for (int q = 0; q < FITEMS / 2; ++q) {
            const float2 x = ((const float2*)at)[q];
            v[2 * q] = x.x, v[2 * q + 1] = x.y;
        }
    }
}

template <int FITEMS, int KR>
__device__ __forceinline__ void lstm_f32(const float* __restrict__ gates, const float* __restrict__ weights,
                                         float* __restrict__ out, const float* __restrict__ res, int batch,
                                         int steps, int has_res)
{
    constexpr int KS = KT - KR;
    float* hbuf = (float*)smem;                               // [parity][k][item]: h of the step before
    float* slices = hbuf + 2 * H * FITEMS;                    // [parity][unit][item]: this block's new h
    float* red = slices + 2 * 32 * FITEMS;                    // [k-eighth][item][row]: partial sums
    float* ws = red + 8 * FITEMS * 128;                       // [k-eighth][KS][row]: weights not in registers
    unsigned long long* bars = (unsigned long long*)(ws + 8 * KS * 128);  // [parity]: hbuf filled
    const u32 rank = cluster_rank();
    const int block = blockIdx.x / RANKS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int eighth = warp >> 1, r0 = 32 * (warp & 1) + lane, r1 = r0 + 64;  // rows: gates (warp & 1), + 2
    const int items = min(FITEMS, batch - FITEMS * block);
    const u32 bytes = RANKS * 32 * FITEMS * 4;                // a fill of hbuf: every block's units of every item
    const float* mine = weights + ((u64)rank * 8 + eighth) * KT * 128;
    float wa[KR], wb[KR];                                     // rows r0 and r1, this thread's first KR columns
    #pragma unroll
    for (int j = 0; j < KR; ++j) {
        wa[j] = mine[j * 128 + r0];
        wb[j] = mine[j * 128 + r1];
    }
    if constexpr (KS > 0)
        for (int i = threadIdx.x; i < 8 * KS * 128; i += 512)
            ws[i] = weights[((u64)rank * 8 + i / (KS * 128)) * KT * 128 + KR * 128 + i % (KS * 128)];
    for (int i = threadIdx.x; i < 2 * H * FITEMS + 2 * 32 * FITEMS; i += 512) hbuf[i] = 0.f;
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // the zeros, before other blocks' copies
    const u32 hbuf_at = shared_address(hbuf), bars_at = shared_address(bars);
    barriers_ready(bars_at, bytes);
    // the cell this thread updates (threads < 32 FITEMS): unit, item
    const bool cells = threadIdx.x < 32 * FITEMS;
    const int unit = 32 * rank + lane, item = warp;
    const bool live = cells && item < items;
    const u64 row = (u64)(FITEMS * block + item) * steps;
    float gin[4] = {0.f, 0.f, 0.f, 0.f};
    float rin = 0.f, c = 0.f;
    if (live) {
        #pragma unroll
        for (int q = 0; q < 4; ++q) gin[q] = gates[row * 4 * H + q * H + unit];
        if (has_res) rin = res[row * H + unit];
    }
    __syncthreads();
    cluster_sync();                                           // every block's barriers are ready
    for (int s = 0; s < steps; ++s) {
        const int parity = s & 1;
        if (s > 0) {
            barrier_wait(bars_at + 8 * parity, ((s - 1) >> 1) & 1);
            if (threadIdx.x == 0) barrier_expect(bars_at + 8 * parity, bytes);  // for step s + 1's copies
        }
        // this thread's eighth of the sums of rows r0 and r1, each column in order
        const float* hb = hbuf + (parity * H + eighth * KT) * FITEMS;
        float a[FITEMS], b[FITEMS];
        #pragma unroll
        for (int i = 0; i < FITEMS; ++i) a[i] = b[i] = 0.f;
        #pragma unroll
        for (int j = 0; j < KR; ++j) {
            float v[FITEMS];
            column<FITEMS>(hb + j * FITEMS, v);
            #pragma unroll
            for (int i = 0; i < FITEMS; ++i) {
                a[i] = fmaf(wa[j], v[i], a[i]);
                b[i] = fmaf(wb[j], v[i], b[i]);
            }
        }
        #pragma unroll 4
        for (int j = 0; j < KS; ++j) {
            float v[FITEMS];
            column<FITEMS>(hb + (KR + j) * FITEMS, v);
            const float ua = ws[(eighth * KS + j) * 128 + r0], ub = ws[(eighth * KS + j) * 128 + r1];
            #pragma unroll
            for (int i = 0; i < FITEMS; ++i) {
                a[i] = fmaf(ua, v[i], a[i]);
                b[i] = fmaf(ub, v[i], b[i]);
            }
        }
        #pragma unroll
        for (int i = 0; i < FITEMS; ++i) {
            red[(eighth * FITEMS + i) * 128 + r0] = a[i];
            red[(eighth * FITEMS + i) * 128 + r1] = b[i];
        }
        __syncthreads();
        float h = 0.f;
        float* slice = slices + parity * 32 * FITEMS;         // two: a copy may still read the last
        if (cells) {
            float p[4];
            #pragma unroll
            for (int q = 0; q < 4; ++q) {
                float sum = red[item * 128 + 32 * q + lane];
                #pragma unroll
                for (int e = 1; e < 8; ++e) sum += red[(e * FITEMS + item) * 128 + 32 * q + lane];
                p[q] = sum + gin[q];
            }
            c = sigmoid(p[1]) * c + sigmoid(p[0]) * tanhf(p[2]);
            h = sigmoid(p[3]) * tanhf(c);
            slice[lane * FITEMS + item] = h;
        }
        __syncthreads();
        if (s + 1 < steps && threadIdx.x < RANKS) {           // this block's units into every block's next buffer
            const u32 to = hbuf_at + ((1 - parity) * H + rank * 32) * FITEMS * 4, bar = bars_at + 8 * (1 - parity);
            push(to, slice, 32 * FITEMS * 4, bar, threadIdx.x);
        }
        if (live) {
            const u64 o = row * H + (u64)s * H + unit;
            out[o] = has_res ? h + rin : h;
            if (s + 1 < steps) {
                #pragma unroll
                for (int q = 0; q < 4; ++q) gin[q] = gates[(row + s + 1) * 4 * H + q * H + unit];
                if (has_res) rin = res[o + H];
            }
        }
    }
    cluster_sync();                                           // no block leaves while another may write to it
}

// gates [batch, steps, 4H] float32 (gate-major: i, f, g, o); weights: cluster_lstm.float_layout's;
// out [batch, steps, H] float32 = h (+ res, [batch, steps, H] float32, when has_res)
#define FLOAT_KERNEL(NAME, FITEMS, KR)                                                                         \
    extern "C" __global__ void __cluster_dims__(RANKS, 1, 1) __launch_bounds__(512, 1)                         \
    NAME(const float* __restrict__ gates, const float* __restrict__ weights, float* __restrict__ out,          \
         const float* __restrict__ res, int batch, int steps, int has_res) {                                   \
        lstm_f32<FITEMS, (KT < KR ? KT : KR)>(gates, weights, out, res, batch, steps, has_res);                \
    }
"""


@dataclass(frozen=True)
class Variant:
    """One kernel of the source: its name, items a cluster, operand dtype and (float32) the most
    columns of each thread's eighth of the sum whose weights it holds in registers."""

    name: str
    items: int
    dtype: torch.dtype
    registers: int = 0

    def shared_bytes(self, width: int) -> int:
        """Dynamic shared memory a block uses at ``width``: two hidden-state buffers, its new hidden
        state, partial sums, (float32) the weights not in registers, and two barriers."""
        if self.dtype == torch.float16:
            return 2 * (width // 32) * ITEMS * 48 * 2 + 2 * ITEMS * 48 * 2 + 8 * 2 * 32 * 16 + 2 * 8
        eighth = width // 8
        in_shared = eighth - min(eighth, self.registers)
        floats = 2 * width * self.items + 2 * 32 * self.items + 8 * self.items * 128 + 8 * in_shared * 128
        return 4 * floats + 2 * 8


VARIANTS = {
    torch.float16: (Variant("lstm_layer", ITEMS, torch.float16),),
    torch.float32: (
        Variant("lstm_layer_f32", 8, torch.float32, 32),
        Variant("lstm_layer_f32_10", 10, torch.float32, 28),
    ),
}
"""The kernels for each operand dtype: float16 tensor-core products (``fp16``) or IEEE float32 ones
(an item's sums in the same order in both float32 kernels, so either gives its results bitwise; 10
items a cluster let a batch of 64 run in one round of the 7 clusters an H200 holds at once)."""

FLOAT_ITEMS = tuple(v.items for v in VARIANTS[torch.float32])
"""Items a cluster of the float32 kernels (each thread sums two rows for all of them)."""

_SOURCE = (
    _HELPERS
    + _HALF
    + _FLOAT
    + "".join(f"FLOAT_KERNEL({v.name}, {v.items}, {v.registers})\n" for v in VARIANTS[torch.float32])
)


def fits(width: int, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a kernel for ``dtype`` (float16 or float32 operands) runs an LSTM of ``width``
    hidden units on ``device``: a CUDA GPU of compute capability 9.x (clusters, distributed shared
    memory), a width of 128, 256 or 512 (clusters of 4 to 16 blocks) whose cluster the device can
    schedule, the shared memory it needs, and an NVRTC library."""
    if device.type != "cuda" or width not in (128, 256, 512) or dtype not in VARIANTS:
        return False
    return bool(_usable(width, nvrtc.device_index(device), dtype))


@functools.cache
def _usable(width: int, device: int, dtype: torch.dtype) -> tuple[tuple[Variant, int], ...]:
    """The kernels for ``dtype`` that run at ``width`` on CUDA device ``device``, each with how many of
    its clusters run at once; decided once (a failed compile is not retried each call)."""
    props = torch.cuda.get_device_properties(device)
    if props.major != 9:
        return ()
    usable = []
    for v in VARIANTS[dtype]:
        if v.shared_bytes(width) > getattr(props, "shared_memory_per_block_optin", 0):
            continue
        try:
            at_once = _kernel(width, device, v).max_active_clusters(width // 32, THREADS)
        except (nvrtc.CompileError, RuntimeError, OSError):
            return ()
        if at_once > 0:
            usable.append((v, at_once))
    return tuple(usable)


def concurrent_clusters(width: int, device: int, dtype: torch.dtype, items: int | None = None) -> int:
    """How many clusters of the kernel for ``dtype`` (of ``items`` items a cluster; None: the first)
    at ``width`` CUDA device ``device`` runs at once (0 where it cannot run, e.g. a cluster of
    ``width / 32`` blocks on a partitioned GPU)."""
    return next((n for v, n in _usable(width, device, dtype) if items in (None, v.items)), 0)


def variant(batch: int, width: int, device: torch.device, dtype: torch.dtype) -> Variant:
    """The kernel for ``batch`` items: the fewest rounds of clusters (those beyond what the device
    runs at once wait for a whole earlier cluster), each round's step costing about its items plus 8
    (the hidden state's exchange: measured on an H200 as about as long as 8 items' products); fewer
    items a cluster on a tie. The choice only sets speed: an item's results are bitwise the same in
    every kernel of a dtype. Call only where :func:`fits`."""

    def cost(choice: tuple[Variant, int]) -> tuple[int, int]:
        v, at_once = choice
        clusters = -(-batch // v.items)
        rounds = -(-clusters // at_once)
        return rounds * (v.items + 8), v.items

    return min(_usable(width, nvrtc.device_index(device), dtype), key=cost)[0]


def fragments(w_hh: torch.Tensor) -> torch.Tensor:
    """A recurrent weight ``W_hh`` ``[4H, H]`` (gate-major rows) to the float16 kernel's layout.

    Block ``r`` of a cluster owns units ``32r .. 32r + 31``; its warp ``w`` holds in registers the
    rows of m-tile ``w % 8`` (units ``32r + 4(w % 8) + u``, ``u < 4``: row ``4q + u`` of the tile is
    gate ``q``) for the k-half ``w // 8`` of the sum, as the tensor-core product's A operand: for
    its ``k``-th 16-wide chunk and register ``j``, lane ``4g + t`` holds the two float16 of row
    ``g + 8 (j % 2)``, columns ``2t + 8 (j // 2) + e``, ``e`` in 0, 1. Shape
    ``[H / 32, 16, H / 32, 4, 32, 2]`` float16 (the kernel reads each pair as one register)."""
    four_h, width = w_hh.shape
    ranks = khalf = width // 32
    shape = [ranks, 16, khalf, 4, 32, 2]

    def axis(n: int, dim: int) -> torch.Tensor:
        view = [1] * len(shape)
        view[dim] = n
        return torch.arange(n, device=w_hh.device).view(view)

    rank, warp, k, j, lane, e = (axis(n, d) for d, n in enumerate(shape))
    row = lane // 4 + 8 * (j % 2)
    rows = (row // 4) * width + 32 * rank + 4 * (warp % 8) + row % 4
    cols = 16 * ((warp // 8) * khalf + k) + 2 * (lane % 4) + 8 * (j // 2) + e
    return w_hh.to(torch.float16)[rows, cols].contiguous()


def float_layout(w_hh: torch.Tensor) -> torch.Tensor:
    """A recurrent weight ``W_hh`` ``[4H, H]`` (gate-major rows) to the float32 kernel's layout
    ``[H / 32, 8, H / 8, 128]``: block ``r`` owns units ``32r .. 32r + 31``, its row ``32q + u`` is
    gate ``q`` of unit ``32r + u``; ``[r, e, j, row]`` is that row's weight of column ``e H / 8 + j``
    (the eighth ``e`` of the sum two of its warps compute, a row a lane)."""
    four_h, width = w_hh.shape
    view = w_hh.to(torch.float32).reshape(4, width // 32, 32, 8, width // 8)  # gate, rank, unit, eighth, j
    return view.permute(1, 3, 4, 0, 2).reshape(width // 32, 8, width // 8, 128).contiguous()


_LOCK = threading.Lock()


@functools.cache
def _cubin(width: int, capability: tuple[int, int]) -> bytes:
    return nvrtc.compile_cubin(_SOURCE.replace("__WIDTH__", str(width)), "cluster_lstm", capability)


_KERNELS: dict[tuple[int, int, str], nvrtc.Kernel] = {}


def _kernel(width: int, device: int, variant: Variant) -> nvrtc.Kernel:
    with _LOCK:
        key = (width, device, variant.name)
        if key not in _KERNELS:
            cubin = _cubin(width, torch.cuda.get_device_capability(device))
            _KERNELS[key] = nvrtc.load(cubin, variant.name, device, variant.shared_bytes(width), width // 32 > 8)
        return _KERNELS[key]


def run_layer(
    gates: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, res: torch.Tensor | None, items: int | None = None
) -> None:
    """One LSTM layer over every step from a zero state: ``out[b, t] = h_t (+ res[b, t])``.

    ``gates`` ``[batch, steps, 4H]`` float32: the input projection with both biases, gate-major
    (i, f, g, o); ``out`` and ``res`` ``[batch, steps, H]``, contiguous, on the same GPU, float16
    (the float16 kernel; ``weights``: :func:`fragments` of ``W_hh``) or float32 (the IEEE float32
    kernels; ``weights``: :func:`float_layout`). ``items``: the kernel of that many items a cluster
    (one of :data:`FLOAT_ITEMS` in float32; None: :func:`variant`'s choice). The caller checks
    :func:`fits` for that dtype."""
    batch, steps, four_h = gates.shape
    if batch == 0 or steps == 0:
        return
    width = four_h // 4
    dtype = out.dtype
    if dtype not in VARIANTS:
        raise TypeError(f"the cluster LSTM kernels write float16 or float32, not {dtype}")
    if weights.dtype != dtype or (res is not None and res.dtype != dtype):
        got = f"weights {weights.dtype}, residual {None if res is None else res.dtype}"
        raise TypeError(f"the {dtype} kernel takes {dtype} weights and residual, not {got}")
    if items is None:
        chosen = variant(batch, width, gates.device, dtype)
    else:
        chosen = next((v for v in VARIANTS[dtype] if v.items == items), None)
        if chosen is None:
            have = [v.items for v in VARIANTS[dtype]]
            raise ValueError(f"no {dtype} cluster LSTM kernel of {items} items a cluster (there are {have})")
    kernel = _kernel(width, gates.device.index, chosen)
    clusters = -(-batch // chosen.items)
    has_res = res is not None
    kernel.launch(
        clusters * (width // 32), THREADS, [gates, weights, out, res if has_res else out, batch, steps, int(has_res)]
    )
