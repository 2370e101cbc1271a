"""Residual vector quantization's code search in IEEE float32 in one launch (CUDA C++, compiled with NVRTC).

``exact``'s search on GPUs with the shared memory for it (compute capability 8.0 or later with about
193 KiB a block: Hopper's 227 KiB, not an A100's 163): a block of 256 threads takes 128 rows
(frames) through every codebook. Its residual stays in shared memory (transposed, a row a column);
each codebook streams through in tiles of 128 codes (``cp.async``, double-buffered); a thread
computes 8 rows x 8 codes of the distances with fused multiply-adds over the 128 dimensions in
order, as an SGEMM's register tile does. A row's sums never depend on the other rows, so its codes
do not depend on the batch; a row whose distances are all NaN gets code 0. The Triton kernel
(:func:`fastencodec.kernels.cuda.residual_codes`) does the other shapes and precisions.
"""

from __future__ import annotations

import functools

import torch

from fastencodec.kernels import nvrtc

DIM = 128
"""Values of an embedding (the 24 and 48 kHz models' quantizer dimension) the kernel is written for."""

ROWS = 128
"""Rows (frames) a block searches; the thread layout (16 x 16 threads of 8 x 8) fixes it."""

CODES = 128
"""Codes a tile of a codebook; a codebook's size must be a multiple."""

THREADS = 256

SHARED_BYTES = 4 * (DIM * ROWS + 2 * DIM * CODES + 2 * ROWS)
"""The residual, two codebook tiles, and each row's squared norm and chosen code."""

_SOURCE = r"""
#define D 128
#define BM 128
#define BN 128
#define NEG_INF __int_as_float(0xff800000)
typedef unsigned int u32;
typedef unsigned long long u64;
extern __shared__ __align__(16) unsigned char smem[];

__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
// Row i of this thread's 8 (of 128) and code j of its 8 (of a tile's 128): two runs of 4, 64 apart.
__device__ __forceinline__ int row_of(int ty, int i) { return 4 * ty + (i & 3) + 64 * (i >> 2); }
__device__ __forceinline__ int code_of(int tx, int j) { return 4 * tx + (j & 3) + 64 * (j >> 2); }

// Tile i (codebook i / tiles, codes (i % tiles) * BN ...) of embed_t [nq][D][bins] into buffer i % 2.
__device__ __forceinline__ void load_tile(float* tiles, const float* embed_t, int i, int per_book, int bins) {
    const int k = i / per_book, n0 = (i % per_book) * BN;
    const float* src = embed_t + (u64)k * D * bins + n0;
    const u32 dst = shared_address(tiles + (i & 1) * D * BN);
    for (int c = threadIdx.x; c < D * BN / 4; c += 256) {
        const int d = c / (BN / 4), q = c % (BN / 4);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                     :: "r"(dst + 4 * (d * BN + 4 * q)), "l"(src + (u64)d * bins + 4 * q) : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// Each of the block's rows' squared norm, the dimensions in order (threads < BM, a row each).
__device__ __forceinline__ void squared_norms(const float* xs, float* xsq) {
    if (threadIdx.x < BM) {
        float s = 0.f;
        for (int d = 0; d < D; ++d) s = __fmaf_rn(xs[d * BM + threadIdx.x], xs[d * BM + threadIdx.x], s);
        xsq[threadIdx.x] = s;
    }
}

// x [rows, D] float32; embed [nq, bins, D] and its transpose embed_t [nq, D, bins]; embed_sq [nq, bins];
// codes [rows, nq] int64: codes[r, k] = argmax_n -((|x_r|^2 - 2 x_r . e_kn) + |e_kn|^2), lowest n on ties,
// then x_r -= e_k[codes[r, k]].
extern "C" __global__ void __launch_bounds__(256, 1)
residual_codes(const float* __restrict__ x, const float* __restrict__ embed, const float* __restrict__ embed_t,
               const float* __restrict__ embed_sq, long long* __restrict__ codes, int rows, int bins, int nq)
{
    float* xs = (float*)smem;                                 // [D][BM]: the residual, transposed
    float* tiles = xs + D * BM;                               // [2][D][BN]: codebook tiles
    float* xsq = tiles + 2 * D * BN;                          // [BM]: squared norms
    int* chosen = (int*)(xsq + BM);                           // [BM]: codes of the last codebook
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const long long first = (long long)blockIdx.x * BM;
    const int per_book = bins / BN, total = nq * per_book;
    load_tile(tiles, embed_t, 0, per_book, bins);
    for (int c = threadIdx.x; c < BM * D / 4; c += 256) {     // 32 rows a warp, a float4 of each
        const int r = c % BM, q = c / BM;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (first + r < rows) v = ((const float4*)(x + (u64)(first + r) * D))[q];
        xs[(4 * q) * BM + r] = v.x, xs[(4 * q + 1) * BM + r] = v.y;
        xs[(4 * q + 2) * BM + r] = v.z, xs[(4 * q + 3) * BM + r] = v.w;
    }
    __syncthreads();
    squared_norms(xs, xsq);
    __syncthreads();
    float best[8], rsq[8];
    int at[8];
    #pragma unroll
    for (int i = 0; i < 8; ++i) best[i] = NEG_INF, at[i] = 0, rsq[i] = xsq[row_of(ty, i)];
    for (int i = 0; i < total; ++i) {
        if (i + 1 < total) {
            load_tile(tiles, embed_t, i + 1, per_book, bins);
            asm volatile("cp.async.wait_group 1;" ::: "memory");
        } else {
            asm volatile("cp.async.wait_group 0;" ::: "memory");
        }
        __syncthreads();
        const int k = i / per_book, n0 = (i % per_book) * BN;
        const float* tile = tiles + (i & 1) * D * BN;
        float acc[8][8];
        #pragma unroll
        for (int a = 0; a < 8; ++a)
            #pragma unroll
            for (int b = 0; b < 8; ++b) acc[a][b] = 0.f;
        #pragma unroll 4
        for (int d = 0; d < D; ++d) {
            const float4 x0 = *(const float4*)(xs + d * BM + 4 * ty), x1 = *(const float4*)(xs + d * BM + 64 + 4 * ty);
            const float4 e0 = *(const float4*)(tile + d * BN + 4 * tx);
            const float4 e1 = *(const float4*)(tile + d * BN + 64 + 4 * tx);
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            const float ev[8] = {e0.x, e0.y, e0.z, e0.w, e1.x, e1.y, e1.z, e1.w};
            #pragma unroll
            for (int a = 0; a < 8; ++a)
                #pragma unroll
                for (int b = 0; b < 8; ++b) acc[a][b] = __fmaf_rn(xv[a], ev[b], acc[a][b]);
        }
        float esq[8];
        #pragma unroll
        for (int b = 0; b < 8; ++b) esq[b] = embed_sq[(u64)k * bins + n0 + code_of(tx, b)];
        #pragma unroll
        for (int a = 0; a < 8; ++a) {
            float tb = NEG_INF;
            int ta = 0;
            #pragma unroll
            for (int b = 0; b < 8; ++b) {                     // codes in increasing order
                const float dist = -__fadd_rn(__fmaf_rn(-2.f, acc[a][b], rsq[a]), esq[b]);
                if (dist > tb) tb = dist, ta = n0 + code_of(tx, b);
            }
            #pragma unroll
            for (int o = 8; o > 0; o >>= 1) {                 // the 16 threads of these rows
                const float ob = __shfl_xor_sync(0xffffffffu, tb, o);
                const int oa = __shfl_xor_sync(0xffffffffu, ta, o);
                if (ob > tb || (ob == tb && oa < ta)) tb = ob, ta = oa;
            }
            if (tb > best[a]) best[a] = tb, at[a] = ta;       // tiles in increasing order
        }
        __syncthreads();                                      // the buffer is free for tile i + 2
        if ((i + 1) % per_book == 0) {                        // codebook k is done
            if (tx == 0) {
                #pragma unroll
                for (int a = 0; a < 8; ++a) {
                    const int r = row_of(ty, a);
                    chosen[r] = at[a];
                    if (first + r < rows) codes[(first + r) * nq + k] = at[a];
                }
            }
            if (k + 1 == nq) break;
            __syncthreads();
            const float* book = embed + (u64)k * bins * D;
            for (int c = threadIdx.x; c < BM * D / 4; c += 256) {  // 32 rows a warp, a float4 of each
                const int r = c % BM, q = c / BM;
                const float4 e = ((const float4*)(book + (u64)chosen[r] * D))[q];
                xs[(4 * q) * BM + r] -= e.x, xs[(4 * q + 1) * BM + r] -= e.y;
                xs[(4 * q + 2) * BM + r] -= e.z, xs[(4 * q + 3) * BM + r] -= e.w;
            }
            __syncthreads();
            squared_norms(xs, xsq);
            __syncthreads();
            #pragma unroll
            for (int a = 0; a < 8; ++a) best[a] = NEG_INF, at[a] = 0, rsq[a] = xsq[row_of(ty, a)];
        }
    }
}
"""


def fits(device: torch.device, dim: int, bins: int) -> bool:
    """Whether the kernel searches codebooks of ``bins`` codes of ``dim`` values on ``device``: a CUDA
    GPU of compute capability 8.0 or later with :data:`SHARED_BYTES` of shared memory a block, ``dim``
    :data:`DIM`, ``bins`` a multiple of :data:`CODES`, and an NVRTC library that compiles it."""
    if device.type != "cuda" or dim != DIM or bins % CODES or bins == 0:
        return False
    return _fits(nvrtc.device_index(device))


@functools.cache
def _fits(device: int) -> bool:
    props = torch.cuda.get_device_properties(device)
    if props.major < 8 or getattr(props, "shared_memory_per_block_optin", 0) < SHARED_BYTES:
        return False
    return _KERNEL.loads(device)


_KERNEL = nvrtc.Loader(_SOURCE, "rvq_search", "residual_codes", SHARED_BYTES)


def residual_codes(residual: torch.Tensor, embed: torch.Tensor, embed_sq: torch.Tensor) -> torch.Tensor:
    """Int64 codes ``[rows, n_q]`` of ``residual`` ``[rows, D]`` float32 against the codebooks ``embed``
    ``[n_q, bins, D]`` with squared norms ``embed_sq`` ``[n_q, bins]``, all contiguous float32 on one GPU
    where :func:`fits`: for each codebook in order the code of the largest ``-((|x|^2 - 2 x.e) + |e|^2)``
    (the lowest on ties), then ``x -= e``."""
    if any(t.dtype != torch.float32 for t in (residual, embed, embed_sq)):
        raise TypeError(f"the search takes float32, not {residual.dtype}, {embed.dtype}, {embed_sq.dtype}")
    rows, dim = residual.shape
    n_q, bins, embed_dim = embed.shape
    if embed_dim != dim or embed_sq.shape != (n_q, bins):
        raise ValueError(f"codebooks {tuple(embed.shape)} and norms {tuple(embed_sq.shape)} for rows of {dim} values")
    codes = torch.empty(rows, n_q, dtype=torch.long, device=residual.device)
    if rows == 0 or n_q == 0:
        return codes
    residual, embed, embed_sq = (nvrtc.aligned(t) for t in (residual, embed, embed_sq))
    embed_t = embed.transpose(1, 2).contiguous()
    kernel = _KERNEL(residual.device.index)
    kernel.launch(-(-rows // ROWS), THREADS, [residual, embed, embed_t, embed_sq, codes, rows, bins, n_q])
    return codes
