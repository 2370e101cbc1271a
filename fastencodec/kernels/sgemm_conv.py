"""IEEE float32 convolutions as register-tiled implicit GEMMs (CUDA C++, compiled with NVRTC).

``exact``'s convolutions of a multiple of :data:`CHUNK` input and of :data:`OUTPUTS` output
channels, channels-last, on CUDA GPUs of compute capability 8.0 or later: a block of 256
threads computes 128 output rows x 128 output channels, a thread 8 x 8 of them, summing the
products of every tap and input channel in order (tap-major, 16 channels a chunk) with fused
multiply-adds; the input's rows (reflect- or zero-padded by index arithmetic, an ELU applied on
load) and the weights stream through shared memory, double-buffered. Tiles never straddle items,
and an output's sum is in the same order in any block, so an item's results do not depend on the
batch. The Triton kernel (:func:`fastencodec.kernels.triton_ops.conv1d_kernel`) does the rest.
"""

from __future__ import annotations

import functools

import torch

from fastencodec.kernels import nvrtc

ROWS = OUTPUTS = 128
"""Output rows and output channels a block computes (the thread layout, 16 x 16 threads of 8 x 8, fixes them)."""

CHUNK = 16
"""Input channels a reduction chunk; the input channels must be a multiple."""

THREADS = 256

SHARED_BYTES = 4 * 2 * 2 * CHUNK * ROWS
"""Two buffers each of an input chunk (transposed) and a weight chunk."""

_SOURCE = r"""
#define BM 128
#define BN 128
#define BK 16
typedef unsigned int u32;
typedef unsigned long long u64;
extern __shared__ __align__(16) unsigned char smem[];

__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ float elu(float v) { return v > 0.f ? v : expf(v) - 1.f; }

struct Conv {
    const float* x; const float* w; const float* bias; const float* res; float* y; const int* lens;
    int t_in, t_out, c_in, c_out, pad_left, taps, stride, dil, reflect, elu_in, add, elu_out;
};

// This thread's two float4 of chunk q (tap q / (c_in / BK), channels (q % (c_in / BK)) * BK + 8 half ...):
// input row src of output row t (padded by index arithmetic; zeros outside the item), ELU applied.
__device__ __forceinline__ void load_inputs(const Conv& p, const float* x_item, int n, int t, int half, int q,
                                            float4& u, float4& v) {
    const int per_tap = p.c_in / BK, j = q / per_tap, c = (q % per_tap) * BK + 8 * half;
    int src = t * p.stride + j * p.dil - p.pad_left;
    if (p.reflect) {
        src = src < 0 ? -src : src;
        src = src >= n ? 2 * (n - 1) - src : src;
    }
    u = v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (src >= 0 && src < n && t < p.t_out) {
        const float4* at = (const float4*)(x_item + (u64)src * p.c_in + c);
        u = __ldg(at), v = __ldg(at + 1);
        if (p.elu_in) {
            u = make_float4(elu(u.x), elu(u.y), elu(u.z), elu(u.w));
            v = make_float4(elu(v.x), elu(v.y), elu(v.z), elu(v.w));
        }
    }
}
__device__ __forceinline__ void store_inputs(float* a, int row, int half, float4 u, float4 v) {
    float* at = a + (8 * half) * BM + row;
    at[0] = u.x, at[BM] = u.y, at[2 * BM] = u.z, at[3 * BM] = u.w;
    at[4 * BM] = v.x, at[5 * BM] = v.y, at[6 * BM] = v.z, at[7 * BM] = v.w;
}
// Chunk q's weights (rows q * BK ... of w [taps * c_in, c_out], columns n0 ...) into b [BK][BN], asynchronously.
__device__ __forceinline__ void load_weights(const Conv& p, float* b, int q, int n0) {
    const u32 to = shared_address(b);
    for (int c = threadIdx.x; c < BK * BN / 4; c += 256) {
        const int k = c / (BN / 4), f = c % (BN / 4);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                     :: "r"(to + 4 * (k * BN + 4 * f)), "l"(p.w + (u64)(q * BK + k) * p.c_out + n0 + 4 * f)
                     : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// y[b, t, :] = elu?(bias + sum_{k, c} w[k, c, :] * elu?(x_padded[b, t * stride + k * dil, c]) (+ res[b, t, :]))
// x [B, t_in, c_in], w [taps, c_in, c_out], y and res [B, t_out, c_out]; lens (or null): item b is lens[b] long.
extern "C" __global__ void __launch_bounds__(256, 2)
conv1d(const float* x, const float* w, const float* bias, const float* res, float* y, const int* lens,
       int t_in, int t_out, int c_in, int c_out, int pad_left, int taps, int stride, int dil, int flags)
{
    const Conv p = {x, w, bias, res, y, lens, t_in, t_out, c_in, c_out, pad_left, taps, stride, dil,
                    flags & 1, (flags >> 1) & 1, (flags >> 2) & 1, (flags >> 3) & 1};
    float* as = (float*)smem;                                 // [2][BK][BM]: input chunks, transposed
    float* bs = as + 2 * BK * BM;                             // [2][BK][BN]: weight chunks
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int row = threadIdx.x & (BM - 1), half = threadIdx.x >> 7;
    const int t0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const u64 item = blockIdx.z;
    const float* x_item = x + item * t_in * c_in;
    const int n = lens ? lens[item] : t_in;
    const int chunks = taps * (c_in / BK);
    float acc[8][8];
    #pragma unroll
    for (int a = 0; a < 8; ++a)
        #pragma unroll
        for (int b = 0; b < 8; ++b) acc[a][b] = 0.f;
    float4 u, v;
    load_weights(p, bs, 0, n0);
    load_inputs(p, x_item, n, t0 + row, half, 0, u, v);
    store_inputs(as, row, half, u, v);
    for (int q = 0; q < chunks; ++q) {
        const int cur = q & 1;
        if (q + 1 < chunks) {
            load_weights(p, bs + (1 - cur) * BK * BN, q + 1, n0);
            load_inputs(p, x_item, n, t0 + row, half, q + 1, u, v);
            asm volatile("cp.async.wait_group 1;" ::: "memory");
        } else {
            asm volatile("cp.async.wait_group 0;" ::: "memory");
        }
        __syncthreads();
        const float* a_s = as + cur * BK * BM;
        const float* b_s = bs + cur * BK * BN;
        #pragma unroll
        for (int k = 0; k < BK; ++k) {
            const float4 x0 = *(const float4*)(a_s + k * BM + 4 * ty);
            const float4 x1 = *(const float4*)(a_s + k * BM + 64 + 4 * ty);
            const float4 e0 = *(const float4*)(b_s + k * BN + 4 * tx);
            const float4 e1 = *(const float4*)(b_s + k * BN + 64 + 4 * tx);
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            const float ev[8] = {e0.x, e0.y, e0.z, e0.w, e1.x, e1.y, e1.z, e1.w};
            #pragma unroll
            for (int a = 0; a < 8; ++a)
                #pragma unroll
                for (int b = 0; b < 8; ++b) acc[a][b] = __fmaf_rn(xv[a], ev[b], acc[a][b]);
        }
        if (q + 1 < chunks) store_inputs(as + (1 - cur) * BK * BM, row, half, u, v);  // read two chunks ago
        __syncthreads();
    }
    float bv[8];
    #pragma unroll
    for (int b = 0; b < 8; ++b) bv[b] = bias[n0 + 4 * tx + (b & 3) + 64 * (b >> 2)];
    #pragma unroll
    for (int a = 0; a < 8; ++a) {
        const int t = t0 + 4 * ty + (a & 3) + 64 * (a >> 2);
        if (t >= t_out) continue;
        const u64 at = (item * t_out + t) * c_out + n0 + 4 * tx;
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            float o[4];
            #pragma unroll
            for (int e = 0; e < 4; ++e) o[e] = __fadd_rn(acc[a][4 * h + e], bv[4 * h + e]);
            if (p.add) {
                const float4 r = *(const float4*)(res + at + 64 * h);
                o[0] = __fadd_rn(o[0], r.x), o[1] = __fadd_rn(o[1], r.y);
                o[2] = __fadd_rn(o[2], r.z), o[3] = __fadd_rn(o[3], r.w);
            }
            if (p.elu_out) {
                #pragma unroll
                for (int e = 0; e < 4; ++e) o[e] = elu(o[e]);
            }
            *(float4*)(y + at + 64 * h) = make_float4(o[0], o[1], o[2], o[3]);
        }
    }
}
"""


def fits(device: torch.device, c_in: int, c_out: int) -> bool:
    """Whether the kernel runs a convolution of ``c_in`` to ``c_out`` channels on ``device``: a CUDA
    GPU of compute capability 8.0 or later, ``c_in`` a multiple of :data:`CHUNK`, ``c_out`` of
    :data:`OUTPUTS`, and an NVRTC library that compiles it."""
    if device.type != "cuda" or c_in % CHUNK or c_out % OUTPUTS or not c_in or not c_out:
        return False
    return _fits(nvrtc.device_index(device))


@functools.cache
def _fits(device: int) -> bool:
    if torch.cuda.get_device_properties(device).major < 8:
        return False
    return _KERNEL.loads(device)


_KERNEL = nvrtc.Loader(_SOURCE, "sgemm_conv", "conv1d", SHARED_BYTES)


def conv1d(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor,
    y: torch.Tensor,
    pad_left: int,
    stride: int = 1,
    dilation: int = 1,
    reflect: bool = False,
    elu_in: bool = False,
    res: torch.Tensor | None = None,
    elu_out: bool = False,
    lens: torch.Tensor | None = None,
) -> None:
    """``y[b, t] = elu?(bias + sum_k w[k] . elu?(x_padded[b, t * stride + k * dilation]) (+ res[b, t]))``.

    ``x`` ``[B, t_in, c_in]``, ``w`` ``[K, c_in, c_out]`` (taps, input, output channels), ``bias``
    ``[c_out]``, ``y`` and ``res`` ``[B, t_out, c_out]``: contiguous float32 on one GPU where
    :func:`fits`. ``pad_left``: rows (samples) of padding before the input, reflect (``reflect``) or
    zeros; ``lens`` int32 ``[B]`` (or None: ``t_in``): each item's length, padded at its own end."""
    batch, t_in, c_in = x.shape
    taps, _, c_out = w.shape
    t_out = y.shape[1]
    if batch == 0 or t_out == 0:
        return
    if any(t.dtype != torch.float32 for t in (x, w, bias, y, *([] if res is None else [res]))):
        raise TypeError("the float32 convolution takes float32 tensors")
    if not y.is_contiguous() or y.data_ptr() % 16:
        raise ValueError("the float32 convolution writes a contiguous, 16-byte aligned output")
    if lens is not None and (lens.dtype != torch.int32 or lens.shape != (batch,) or lens.device != x.device):
        raise ValueError(f"lens must be int32 [{batch}] on {x.device}, not {lens.dtype} {tuple(lens.shape)}")
    x, w, bias, res, lens = (nvrtc.aligned(t) for t in (x, w, bias, res, lens))
    flags = int(reflect) | int(elu_in) << 1 | int(res is not None) << 2 | int(elu_out) << 3
    grid = (-(-t_out // ROWS), c_out // OUTPUTS, batch)
    args = [x, w, bias, y if res is None else res, y, lens, t_in, t_out, c_in, c_out, pad_left, taps, stride, dilation]
    _KERNEL(x.device.index).launch(grid, THREADS, [*args, flags])
