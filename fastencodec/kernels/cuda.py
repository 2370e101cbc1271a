"""CUDA execution of the networks' steps with the Triton kernels of :mod:`.triton_ops`.

Activations stay channels-last (``[batch, time, channels]``) from the first layer to the last;
weights are re-laid out once (cached, remade if a parameter changes in place). Convolution tiles
depend only on a layer's shape, never on the batch, so each item's arithmetic is the same in
any batch; the LSTM's tiles also follow the batch, where they leave every sum's order unchanged
(:data:`LSTM_TILES`). :class:`GraphCache` replays whole-network CUDA graphs for shapes seen before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
import triton

from fastencodec.kernels import cluster_lstm, rvq_search, sgemm_conv
from fastencodec.kernels import triton_ops as ops
from fastencodec.kernels.conv_tiles import TUNED_ON, ConvShape, ConvTiles, conv_tiles
from fastencodec.kernels.cpu import WeightCache
from fastencodec.kernels.plan import ConvStep, ConvTransposeStep, LSTMStep, Step, activated_outputs, fusable_shortcut
from fastencodec.kernels.precision import activation_dtype
from fastencodec.nn.layers import Conv1d, ConvTranspose1d, ReplayOrder, pad1d

INPUT_PRECISION = {
    ("exact", "encoder"): ("ieee", "ieee"),
    ("exact", "decoder"): ("ieee", "ieee"),
    ("tf32", "encoder"): ("tf32x3", "tf32x3"),
    ("tf32", "decoder"): ("tf32", "tf32"),
    ("fp16", "encoder"): ("ieee", "fp16"),
    ("fp16", "decoder"): ("ieee", "fp16"),
    ("bf16", "encoder"): ("ieee", "tf32"),
    ("bf16", "decoder"): ("ieee", "tf32"),
}
"""Triton ``input_precision`` of (convolutions, LSTM) float32 products per (mode, network).
``tf32x3`` splits each float32 operand into two TF32 parts (three tensor-core products, error
near float32's): the encoder picks tokens, where TF32's rounding moves too many of them.
In ``fp16`` and ``bf16`` the convolutions' operands are 16-bit (the setting is unused). The LSTM's
products take float32 operands in ``bf16``, with TF32 products; in ``fp16`` (marked ``"fp16"``, not a
Triton setting) float16 operands: its inputs, weights and hidden states, the same 10-bit mantissa as
TF32 in half the bytes. Its cell state and sums are float32 in every mode. Convolutions of fewer than
16 channels on a side take float32 products on FMA units in every mode (:func:`~.triton_ops._add_channels`)."""

NORM_CHUNK = 1 << 16
"""Values per partial sum of a GroupNorm's statistics (fixed: batch invariance)."""

LSTM_ITEMS = 16
"""Items a program of :func:`~.triton_ops.lstm_wave_kernel` computes (fixed: batch invariance)."""


class LSTMTiles(NamedTuple):
    """Hidden units (each with its four gates) and reduction chunk a program of
    :func:`~.triton_ops.lstm_wave_kernel`, and its loop's software-pipelining depth (``num_stages``)."""

    units: int
    chunk: int
    stages: int


LSTM_TILES = {
    "ieee": (LSTMTiles(8, 128, 3), LSTMTiles(16, 64, 3)),
    "fp16": (LSTMTiles(8, 64, 4), LSTMTiles(16, 64, 3)),
}
"""LSTM tiles per product kind (Triton precision, or ``"fp16"``: float16 operands) for one block of
:data:`LSTM_ITEMS` items and for more; other kinds take :data:`LSTM_DEFAULT`. Choosing them by the
batch keeps batch invariance because they change which program computes an output and how its loads
are chunked and scheduled, never the order of its sum: the outputs are bitwise the same with any of
them (measured on an H200 and checked by ``tests/test_kernels_gpu.py``; timings in BENCHMARKS.md)."""

LSTM_DEFAULT = LSTMTiles(8, 64, 3)
"""The LSTM tiles of other product kinds, and where a table entry does not divide the width."""


def lstm_tiles(kind: str, batch: int, width: int) -> LSTMTiles:
    """The LSTM kernel's tiles for products of ``kind``, ``batch`` items and ``width`` hidden units
    (:data:`LSTM_DEFAULT` where the table's tiles do not divide the width)."""
    small, large = LSTM_TILES.get(kind, (LSTM_DEFAULT, LSTM_DEFAULT))
    tiles = small if batch <= LSTM_ITEMS else large
    return tiles if width % tiles.units == 0 and width % tiles.chunk == 0 else LSTM_DEFAULT


def supports(steps: list[Step]) -> bool:
    """Whether :class:`CudaNetwork` can run ``steps`` (in any precision): each LSTM's width must be
    a multiple of its kernel's unit and reduction tiles (others run in torch)."""
    return all(_lstm_fits(step.module.lstm.hidden_size) for step in steps if isinstance(step, LSTMStep))


def _lstm_fits(width: int) -> bool:
    """Whether the LSTM kernel's default tiles divide ``width`` (then :func:`lstm_tiles` always has tiles)."""
    return width % LSTM_DEFAULT.units == 0 and width % LSTM_DEFAULT.chunk == 0


INDEX_LIMIT = 1 << 31
"""Values of one item at one layer (rows x channels) the kernels index with 32-bit integers."""


def _check_index_range(rows: int, channels: int) -> None:
    """Refuse an item whose activations at a layer (``rows`` x ``channels``) reach :data:`INDEX_LIMIT` values.

    Raises:
        ValueError: naming the rows and channels, and the remedy (shorter pieces).
    """
    if rows * channels >= INDEX_LIMIT:
        raise ValueError(
            f"an item of {rows} rows x {channels} channels at one layer reaches the CUDA kernels' 32-bit "
            f"indexing ({INDEX_LIMIT} values); code shorter pieces of the signal (in 'exact', a smaller "
            "RuntimePolicy.chunk_samples streams it)"
        )


def _capability(x: torch.Tensor) -> tuple[int, int]:
    """Compute capability of ``x``'s GPU; CPU tensors (Triton's interpreter) count as the tiles' own GPU."""
    return torch.cuda.get_device_capability(x.device) if x.is_cuda else TUNED_ON


class CudaNetwork:
    """One network's steps (``network``: ``"encoder"`` or ``"decoder"``) in one precision on CUDA;
    ``tiles`` picks each convolution's tiles from its shape, operand kind and the GPU's compute
    capability (benchmarks try others)."""

    def __init__(
        self,
        steps: list[Step],
        precision: str,
        network: str,
        tiles: Callable[[ConvShape, str, tuple[int, int]], ConvTiles] = conv_tiles,
    ):
        self.steps = steps
        self.activated = activated_outputs(steps)
        self.precision = precision
        self.dtype = activation_dtype(precision)
        self.prec, self.lstm_prec = INPUT_PRECISION[precision, network]
        self.operands = self.prec if self.dtype == torch.float32 else "16-bit"
        self.tiles = tiles
        self.weights = WeightCache(self.dtype)
        self.fp32 = WeightCache(torch.float32)

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, C, T]`` float32 on CUDA to the network's output ``[B, C', T']`` float32.

        ``lengths``: for a ragged batch, int32 ``[steps + 1, B]`` on the device, each step's input
        length per item (:func:`~fastencodec.kernels.plan.step_lengths`); each item is then
        computed as if alone up to its own output length (``lengths[-1]``), and what follows is
        unspecified. The steps must satisfy :func:`~fastencodec.kernels.plan.ragged_steps`.
        """
        h = x.transpose(1, 2).contiguous().to(self.dtype)
        kept: tuple[torch.Tensor, Conv1d | None] | None = None  # a residual block's input and its shortcut
        activated = False  # whether h is stored after the ELU its consumer applies
        for s, step in enumerate(self.steps):
            lens = None if lengths is None else lengths[s]
            own_elu = not activated  # the step's ELU, unless its input's producer applied it
            activated = self.activated[s]
            if isinstance(step, ConvStep):
                if step.keep:
                    kept = (h, step.shortcut)
                add = kept if step.add else None
                h = self._conv(step.module, h, step.elu and own_elu, lens, add=add, elu_out=activated)
            elif isinstance(step, ConvTransposeStep):
                h = self._conv_transpose(step.module, h, step.elu and own_elu, lens, elu_out=activated)
            else:  # causal: an item's outputs depend on its own earlier rows only
                h = self._lstm(step, h)
        return h.transpose(1, 2).float().contiguous()

    # -- convolutions ---------------------------------------------------------
    def _conv(
        self,
        module: Conv1d,
        h: torch.Tensor,
        elu: bool,
        lens: torch.Tensor | None = None,
        add: tuple[torch.Tensor, Conv1d | None] | None = None,
        elu_out: bool = False,
    ) -> torch.Tensor:
        """``module`` on channels-last ``h`` ``[B, T, C]`` (after an ELU when ``elu``); ``add``: a residual
        block's input and its conv shortcut (or None: identity), whose output is added; ``elu_out``: the
        output is stored after an ELU."""
        shortcut = residual = None
        if add is not None:
            residual, shortcut = add
            if shortcut is not None and not fusable_shortcut(module, shortcut):
                residual, shortcut = self._conv(shortcut, residual, False, lens), None
        batch, t_in, c_in = h.shape
        conv = module.conv
        c_out, _, k = conv.weight.shape
        left, right = module.padding(t_in)
        reflect = module.pad_mode == "reflect"
        if module.pad_mode not in ("reflect", "constant") or (reflect and t_in <= max(left, right)):
            if lens is not None:
                raise ValueError("a ragged batch needs reflect or zero padding and items longer than the padding")
            # rare: short inputs need the reference's zero-extend-then-reflect; pad in torch, then plain
            h = pad1d(h.transpose(1, 2), left, right, module.pad_mode).transpose(1, 2).contiguous()
            t_in, left, right, reflect = h.shape[1], 0, 0, False
        dil, stride = conv.dilation[0], conv.stride[0]
        t_out = (t_in + left + right - dil * (k - 1) - 1) // stride + 1
        _check_index_range(t_in, c_in)
        _check_index_range(t_out, c_out)
        y = h.new_empty(batch, t_out, c_out)
        w = self._conv_weight(conv)
        b = self.fp32.get(conv.bias)
        fuse_add = shortcut is None and residual is not None and module.norm is None
        short = {}
        if shortcut is not None:  # computed in this kernel from the block's input (``residual``)
            _check_index_range(*residual.shape[1:])
            short = dict(sx=residual, sw=self._conv_weight(shortcut.conv), sbias=self.fp32.get(shortcut.conv.bias),
                         s_in=residual.shape[2], SHORTCUT=True)  # fmt: skip
        if not short and self._sgemm(h, c_in, c_out, self.prec):
            res = residual if fuse_add else None
            elu_y = elu_out and module.norm is None
            sgemm_conv.conv1d(h, w, b, y, left, stride, dil, reflect, elu, res, elu_y, lens)  # fmt: skip
            return y if module.norm is None else self._group_norm(module.norm, y, residual, elu_out)
        shape = ConvShape.of(conv, None if shortcut is None else shortcut.conv)
        tile = self.tiles(shape, self.operands, _capability(h))
        grid = (triton.cdiv(t_out, tile.rows), triton.cdiv(c_out, tile.outputs), batch)
        ops.conv1d_kernel[grid](
            h, w, b, residual if fuse_add else y, y, t_in, t_out, c_in, c_out, left,
            K=k, STRIDE=stride, DIL=dil, REFLECT=reflect, ELU=elu, ADD=fuse_add, PREC=self.prec,
            BT=tile.rows, BCO=tile.outputs, BCI=tile.inputs, OUTS=shape.narrow_outputs,
            lens=lens, RAGGED=lens is not None, ELU_OUT=elu_out and module.norm is None,
            num_warps=tile.warps, num_stages=tile.stages, **short, **ops.COMPILE,
        )  # fmt: skip
        if module.norm is not None:
            y = self._group_norm(module.norm, y, residual, elu_out)
        return y

    @staticmethod
    def _sgemm(h: torch.Tensor, c_in: int, c_out: int, prec: str) -> bool:
        """Whether a convolution of ``c_in`` to ``c_out`` channels on ``h`` with products in ``prec`` runs
        :mod:`.sgemm_conv`'s IEEE float32 kernel (float32 ``h`` and ``"ieee"``, where it fits: chosen by
        shape and device, never the batch)."""
        return prec == "ieee" and h.dtype == torch.float32 and sgemm_conv.fits(h.device, c_in, c_out)

    def _conv_weight(self, conv: torch.nn.Conv1d) -> torch.Tensor:
        """A conv's weight ``[c_out, c_in, K]`` as the kernels read it, ``[K, c_in, c_out]`` (activations' dtype)."""
        return self.weights.get(conv.weight, "kio", lambda p: p.permute(2, 1, 0))

    def _conv_transpose(
        self,
        module: ConvTranspose1d,
        h: torch.Tensor,
        elu: bool,
        lens: torch.Tensor | None = None,
        elu_out: bool = False,
    ) -> torch.Tensor:
        """``module`` on channels-last ``h`` ``[B, T, C]`` (after an ELU when ``elu``; the output
        stored after one when ``elu_out``)."""
        batch, t_in, c_in = h.shape
        conv = module.conv
        _, c_out, k = conv.weight.shape
        stride = conv.stride[0]
        full = (t_in - 1) * stride + k
        _check_index_range(t_in, c_in)
        _check_index_range(full, c_out)
        left, right = module.trim
        if module.norm is not None:  # the norm sees the untrimmed output, as in the reference
            left_k, t_out = 0, full
        else:
            left_k, t_out = left, full - left - right
        y = h.new_empty(batch, t_out, c_out)
        w = self.weights.get(conv.weight, "kio", lambda p: p.permute(2, 0, 1))
        b = self.fp32.get(conv.bias)
        shape = ConvShape.of(conv)
        tile = self.tiles(shape, self.operands, _capability(h))
        phase_rows = triton.cdiv(t_out + left_k, stride)
        grid = (triton.cdiv(phase_rows, tile.rows), triton.cdiv(c_out, tile.outputs), batch * stride)
        ops.conv_transpose1d_kernel[grid](
            h, w, b, y, t_in, t_out, c_in, c_out, left_k,
            K=k, STRIDE=stride, ELU=elu, PREC=self.prec, BQ=tile.rows, BCO=tile.outputs, BCI=tile.inputs,
            OUTS=shape.narrow_outputs, lens=lens, RAGGED=lens is not None, ELU_OUT=elu_out and module.norm is None,
            num_warps=tile.warps, num_stages=tile.stages, **ops.COMPILE,
        )  # fmt: skip
        if module.norm is not None:
            y = self._group_norm(module.norm, y, elu_out=elu_out)[:, left : full - right].contiguous()
        return y

    def _group_norm(
        self, norm: torch.nn.GroupNorm, y: torch.Tensor, residual: torch.Tensor | None = None, elu_out: bool = False
    ) -> torch.Tensor:
        """GroupNorm (one group) of channels-last ``y`` ``[B, T, C]`` (plus ``residual``; then an ELU when
        ``elu_out``), in float32.

        Each item's mean, then its variance about the mean, are summed in fixed chunks of
        ``NORM_CHUNK`` values and the chunks' sums in a fixed order: the same arithmetic in any batch.
        """
        if norm.num_groups != 1:
            raise ValueError(f"GroupNorm with {norm.num_groups} groups is not supported by the kernels")
        batch, t, c = y.shape
        n = t * c
        chunks = triton.cdiv(n, NORM_CHUNK)
        partial = y.new_empty(batch, chunks, dtype=torch.float32)
        mean = y.new_empty(batch, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        for center, stat in ((False, mean), (True, rstd)):
            ops.group_norm_partial_kernel[(chunks, batch)](
                y, mean, partial, n, CENTER=center, CHUNK=NORM_CHUNK, BLOCK=1024, num_warps=4, **ops.COMPILE
            )
            ops.group_norm_total_kernel[(batch,)](
                partial, stat, chunks, n, norm.eps, RSTD=center, BLOCK=256, **ops.COMPILE
            )
        out = torch.empty_like(y)
        bc = triton.next_power_of_2(c)
        bt = max(1, 4096 // bc)
        ops.group_norm_apply_kernel[(triton.cdiv(t, bt), batch)](
            y, mean, rstd, self.fp32.get(norm.weight), self.fp32.get(norm.bias),
            y if residual is None else residual, out, t, c, ADD=residual is not None, BT=bt, BC=bc, ELU_OUT=elu_out,
            num_warps=4, **ops.COMPILE,
        )  # fmt: skip
        return out

    # -- LSTM -------------------------------------------------------------------
    def _lstm(self, step: LSTMStep, h: torch.Tensor) -> torch.Tensor:
        lstm = step.module.lstm
        batch, steps, width = h.shape
        _check_index_range(steps, 4 * width)  # its input projection's output
        half = self.lstm_prec == "fp16"  # float16 operands (the activations' dtype in that mode)
        prec = "ieee" if half else self.lstm_prec  # Triton's setting, unused for float16 operands
        operand = torch.float16 if half else torch.float32
        weights = self.weights if half else self.fp32
        layer_in = h.to(operand)
        out = h.new_empty(batch, steps, width)
        units, bk, stages = lstm_tiles(self.lstm_prec, batch, width)
        if not _lstm_fits(width):  # supports() says so first
            raise ValueError(f"the LSTM kernel needs a width divisible by {LSTM_DEFAULT.chunk}, not {width}")
        layers = lstm.num_layers
        biases = [getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}") for i in range(layers)]
        bias = torch.stack(biases).float()  # [layers, 4H]
        gates = h.new_empty(batch, steps, 4 * width, dtype=torch.float32)
        # the cluster kernels: float16, or IEEE float32 (in 'tf32' the Triton kernel's TF32 products are faster)
        if (half or prec == "ieee") and cluster_lstm.fits(width, h.device, operand):
            return self._lstm_clusters(lstm, h, layer_in, bias, gates)
        # layer 0's input projection (with its biases) for every step at once; the others' within the waves
        self._projection(lstm.weight_ih_l0, layer_in, bias[0], gates, prec)

        def stacked(name: str, first: int) -> torch.Tensor:  # layers first.. of W.T in the kernel's layout
            return torch.stack([
                weights.get(getattr(lstm, f"{name}_l{i}"), f"units{units}", lambda p: ops.units_layout(p.t(), units))
                for i in range(first, layers)
            ])  # fmt: skip

        w_hh = stacked("weight_hh", 0)
        w_ih = stacked("weight_ih", 1) if layers > 1 else w_hh  # (unread with one layer)
        hidden = h.new_empty(layers, batch, steps, width, dtype=operand)
        cell = h.new_zeros(layers, batch, width, dtype=torch.float32)
        grid = (triton.cdiv(batch, LSTM_ITEMS), layers * width // units)
        for wave in range(steps + layers - 1):
            ops.lstm_wave_kernel[grid](
                gates, w_ih, w_hh, bias, hidden, cell, out, h, wave, steps, batch, batch * steps * width,
                L=layers, H=width, PREC=prec, BM=LSTM_ITEMS, U=units, BK=bk,
                num_warps=4, num_stages=stages, **ops.COMPILE,
            )  # fmt: skip
        return out

    def _projection(
        self, w_ih: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, gates: torch.Tensor, prec: str
    ) -> None:
        """An LSTM layer's input projection for every step at once into ``gates`` ``[B, steps, 4H]``
        float32: ``x @ w_ih.T + bias`` (``x`` ``[B, steps, H]`` in the LSTM's operand dtype)."""
        batch, steps, width = x.shape
        half = x.dtype == torch.float16
        w = (self.weights if half else self.fp32).get(w_ih, "io1", lambda p: p.t()[None])
        if self._sgemm(x, width, 4 * width, prec):
            sgemm_conv.conv1d(x, w, bias, gates, 0)
            return
        tile = self.tiles(ConvShape.lstm_projection(width), "16-bit" if half else prec, _capability(x))
        ops.conv1d_kernel[(triton.cdiv(steps, tile.rows), triton.cdiv(4 * width, tile.outputs), batch)](
            x, w, bias, gates, gates, steps, steps, width, 4 * width, 0,
            K=1, STRIDE=1, DIL=1, REFLECT=False, ELU=False, ADD=False, PREC=prec,
            BT=tile.rows, BCO=tile.outputs, BCI=tile.inputs, num_warps=tile.warps, num_stages=tile.stages,
            **ops.COMPILE,
        )  # fmt: skip

    def _lstm_clusters(
        self, lstm: torch.nn.LSTM, h: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        """The LSTM one layer at a time with :mod:`.cluster_lstm` (each layer's input projection
        first, for every step at once, in IEEE float32 or from float16 operands): ``h`` ``[B, steps, H]`` plus the
        last layer's outputs, in ``x``'s dtype (float16 in ``fp16``, float32 in ``exact``)."""
        half = x.dtype == torch.float16
        weights, layout = (self.weights, cluster_lstm.fragments) if half else (self.fp32, cluster_lstm.float_layout)
        for layer in range(lstm.num_layers):
            self._projection(getattr(lstm, f"weight_ih_l{layer}"), x, bias[layer], gates, "ieee")
            last = layer == lstm.num_layers - 1
            y = torch.empty_like(x)
            w_hh = weights.get(getattr(lstm, f"weight_hh_l{layer}"), "cluster", layout)
            cluster_lstm.run_layer(gates, w_hh, y, h if last else None)
            x = y
        return x


class GraphCache:
    """Replays a CUDA graph of ``fn`` for input shapes seen before (at most ``size`` graphs).

    The first call with a shape runs eagerly (compiling kernels), the second captures,
    later ones replay. Outputs are fresh tensors. Replay runs the same kernels on the same
    inputs, so results are bitwise those of eager runs. Calls are serialised by a lock (one
    graph's static buffers serve one call at a time), and graphs are dropped when ``version()``
    (e.g. the weights' storage and version counters) changes, since a graph holds the weights
    it was captured with. A cache's graphs share one memory pool, so cached shapes cost about the
    largest graph's memory, not the sum: one graph's replay overwrites another's activations and
    output. That is safe because the replays are serialised on the GPU too, whatever stream each
    caller uses (:class:`~fastencodec.nn.layers.ReplayOrder`).
    """

    MAX_INPUT_BYTES = 512 << 20
    """Larger inputs run eagerly (a graph keeps its activations' memory while cached)."""

    def __init__(self, fn: Callable[..., torch.Tensor], size: int = 4, version: Callable[[], object] = tuple):
        self.fn = fn
        self.size = size
        self.version = version
        self._version: object = None
        self._lock = threading.Lock()
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._seen: set[tuple] = set()
        self._pool: tuple | None = None
        self._order = ReplayOrder()

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``fn(x)``, or ``fn(x, lengths)`` for a ragged batch: the graph is keyed by the padded
        shape and takes the length table as a second input, so any lengths replay it."""
        with self._lock:
            return self._call((x,) if lengths is None else (x, lengths))

    def _call(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = inputs[0]
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        eager = torch.cuda.is_current_stream_capturing() or torch.is_grad_enabled()
        if eager or x.numel() * x.element_size() > self.MAX_INPUT_BYTES:
            return self.fn(*inputs)
        version = self.version()
        if version != self._version:  # weights changed in place or replaced: their graphs are stale
            self.clear()
            self._version = version
        if key not in self._graphs:
            if key not in self._seen:
                self._seen.add(key)
                return self.fn(*inputs)
            self._graphs[key] = self._capture(inputs)
            while len(self._graphs) > self.size:
                evicted, _ = self._graphs.popitem(last=False)
                self._seen.discard(evicted)
        self._graphs.move_to_end(key)
        graph, static_in, static_out = self._graphs[key]
        return self._order.replay(graph, static_in, inputs, static_out.clone)

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> tuple:
        static_in = tuple(t.clone() for t in inputs)
        device = inputs[0].device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self.fn(*static_in)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(*static_in)
        if self._pool is None:
            self._pool = graph.pool()
        return graph, static_in, static_out

    def clear(self) -> None:
        """Drop every graph (their memory returns to PyTorch's allocator)."""
        self._graphs.clear()
        self._seen.clear()
        self._pool = None


CODE_PRECISION = {"exact": "ieee", "tf32": "tf32x3", "fp16": "tf32x3", "bf16": "tf32x3"}
"""Triton ``input_precision`` of the codebook search's products per mode: IEEE float32 in
``exact`` (:mod:`.rvq_search`'s kernel where it fits); 3xTF32 (tensor cores, error near float32's)
in the others, whose encoders already move more codes than its rounding does (quality per mode in
BENCHMARKS.md)."""

CODE_BLOCKS = (64, 64, 4)
"""Rows a program, codebook rows a tile and warps of :func:`residual_codes`' Triton kernel (fixed:
never the batch). Other choices gave these codes bitwise on an H200 (``benchmarks/codebook_search.py``),
but the order of a row's squared-norm sum follows the layout, so that is measured, not promised."""


def residual_codes(
    residual: torch.Tensor,
    embed: torch.Tensor,
    embed_sq: torch.Tensor,
    prec: str = "ieee",
    blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Residual vector quantization in one launch: int64 codes ``[rows, n_q]`` of ``residual``
    ``[rows, D]`` float32 against the codebooks ``embed`` ``[n_q, bins, D]`` with squared norms
    ``embed_sq`` ``[n_q, bins]``; distances' products in ``prec`` (Triton ``input_precision``:
    ``"ieee"`` is IEEE float32). IEEE float32 takes :mod:`.rvq_search`'s kernel where it
    :func:`~.rvq_search.fits` (the choice follows the device and the codebooks' shape, never the
    batch), the others Triton's with ``blocks`` (:data:`CODE_BLOCKS` when None; given, always
    Triton's: benchmarks compare)."""
    if prec == "ieee" and blocks is None and rvq_search.fits(residual.device, residual.shape[1], embed.shape[1]):
        return rvq_search.residual_codes(residual, embed, embed_sq)
    rows, dim = residual.shape
    n_q, bins, _ = embed.shape
    bm, bn, warps = blocks or CODE_BLOCKS
    codes = torch.empty(rows, n_q, dtype=torch.long, device=residual.device)
    ops.residual_codes_kernel[(triton.cdiv(rows, bm),)](
        residual, embed, embed_sq, codes, rows, bins, NQ=n_q, D=dim, PREC=prec, BM=bm, BN=bn,
        num_warps=warps, **ops.COMPILE,
    )  # fmt: skip
    return codes
