"""Execution of the encoder, quantizer and decoder in a chosen precision mode.

:class:`Networks` is what the codec calls: ``encode`` (audio to embeddings), ``quantize``,
``dequantize`` and ``decode``, each in the mode given at construction
(:mod:`.precision` documents the modes). On CPU, ``exact`` runs the modules themselves and
``fp16``/``bf16`` run :mod:`.cpu`; on CUDA with Triton installed every mode runs the fused
channels-last kernels of :mod:`.cuda`, replayed as CUDA graphs, and no backend flag is read
or set. On CUDA without Triton only ``exact`` runs: the modules under
:func:`~fastencodec.engine.policy.cudnn_precision` (cuDNN in float32, a process-wide flag held
while they run) and the codebook search in float64.

Batch invariance: the CUDA kernels compute each item with the same arithmetic in any batch;
on CPU, where oneDNN and MKL pick algorithms by batch size (outputs then differ in the last
bits), each item runs on its own, so an item's result is the same in any batch there too.
On CUDA with Triton a batch may also hold items of unequal lengths (``lengths=``, a *ragged*
batch, zero-padded on the right): each conv pads each item as the item alone is padded, so each
item's output up to its own length is bitwise what it gets alone (see :meth:`Networks.ragged`).
"""

from __future__ import annotations

import functools

import torch

from fastencodec.engine.policy import cudnn_precision
from fastencodec.kernels.cpu import WeightCache, run_steps_reduced
from fastencodec.kernels.plan import flatten, ragged_steps, step_lengths
from fastencodec.kernels.precision import PrecisionOverflowError, activation_dtype, check_precision
from fastencodec.nn.model import EncodecModel

__all__ = ["Networks", "PrecisionOverflowError", "check_precision", "triton_available"]


@functools.cache
def triton_available() -> bool:
    """Whether the Triton kernels can be imported."""
    try:
        import fastencodec.kernels.cuda  # noqa: F401
    except ImportError:
        return False
    return True


class Networks:
    """A model's networks in one precision mode on the model's device.

    Args:
        model: the model (its weights are read, never changed).
        precision: a name in :data:`~fastencodec.engine.policy.PRECISIONS`.

    Raises:
        ValueError: the precision is unknown or the device cannot run it.
    """

    def __init__(self, model: EncodecModel, precision: str = "exact"):
        self.model = model
        self.precision = precision
        self._cuda: dict[str, object] = {}
        self._cpu_weights = WeightCache(activation_dtype(precision))
        self.check()

    @property
    def device(self) -> torch.device:
        return self.model.quantizer.embed.device

    def check(self) -> None:
        """Raise ValueError if the model's current device cannot run this precision."""
        check_precision(self.precision, self.device)
        if self.device.type == "cuda" and self.precision != "exact" and not triton_available():
            raise ValueError(f"precision {self.precision!r} on CUDA needs Triton (pip install triton)")

    def _uses_kernels(self) -> bool:
        return self.device.type == "cuda" and triton_available() and self._kernels_fit

    @functools.cached_property
    def _kernels_fit(self) -> bool:
        from fastencodec.kernels.cuda import supports

        return all(supports(flatten(getattr(self.model, part).layers)) for part in ("encoder", "decoder"))

    def _steps(self, part: str) -> list:
        return self._graphed(part).fn.steps

    def ragged(self, part: str, length: int) -> bool:
        """Whether an item of ``length`` samples (``"encoder"``) or frames (``"decoder"``) may share
        a batch with items of other lengths: on CUDA with Triton, for networks without
        statistics over time (no GroupNorm) padded with reflection or zeros, and items for which
        no reflect-padded conv sees an input no longer than its padding."""
        if not self._uses_kernels() or not ragged_steps(self._steps(part)):
            return False
        return step_lengths(self._steps(part), length) is not None

    def _lengths(self, part: str, lengths: list[int], padded: int) -> torch.Tensor:
        """The int32 length table ``[steps + 1, B]`` of a ragged batch padded to ``padded``, on the device."""
        steps = self._steps(part)
        table = [step_lengths(steps, n) for n in lengths]
        if padded < max(lengths) or any(t is None for t in table) or not ragged_steps(steps):
            raise ValueError(f"lengths {lengths} cannot share a ragged batch of {padded} on this {part}")
        return torch.tensor(table, dtype=torch.int32).t().contiguous().to(self.device)

    def _graphed(self, part: str):
        net = self._cuda.get(part)
        if net is None:
            from fastencodec.kernels.cuda import CudaNetwork, GraphCache

            network = getattr(self.model, part)
            net = self._cuda[part] = GraphCache(
                CudaNetwork(flatten(network.layers), self.precision, part), version=lambda: _weights_version(network)
            )
        return net

    def _run(self, part: str, x: torch.Tensor, lengths: list[int] | None = None) -> torch.Tensor:
        self.check()
        x = x.float()
        if lengths is not None and len(set(lengths)) == 1 and lengths[0] == x.shape[-1]:
            lengths = None  # not ragged after all
        if lengths is None:
            return self._finite(part, self._forward(part, x), None)
        if not self._uses_kernels():
            raise ValueError("ragged batches need CUDA and Triton")
        table = self._lengths(part, lengths, x.shape[-1])
        return self._finite(part, self._graphed(part)(x.contiguous(), table), table[-1])

    def _finite(self, part: str, out: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """``out`` ``[B, C, T]``, checked in ``fp16`` for values that overflowed float16 (in each
        item's first ``valid[i]`` steps of a ragged batch; the rest is unspecified).

        Raises:
            PrecisionOverflowError: an overflow (tokens or audio would be wrong).
        """
        if self.precision != "fp16":
            return out
        if valid is None:
            finite = bool(torch.isfinite(out).all())
        else:
            inside = torch.arange(out.shape[-1], device=out.device) < valid[:, None]
            finite = bool((torch.isfinite(out) | ~inside[:, None, :]).all())
        if not finite:
            raise PrecisionOverflowError(part, self.precision, self.device)
        return out

    def _forward(self, part: str, x: torch.Tensor) -> torch.Tensor:
        if self._uses_kernels():
            return self._graphed(part)(x.contiguous())
        if self.precision == "exact":
            network = getattr(self.model, part)
        else:
            steps = flatten(getattr(self.model, part).layers)

            def network(item: torch.Tensor) -> torch.Tensor:
                return run_steps_reduced(steps, item, self._cpu_weights)

        if self.device.type == "cuda":  # no Triton: cuDNN, kept in float32 by its flags
            with cudnn_precision(False):
                return network(x)
        return _per_item(network, x)

    def encode(self, audio: torch.Tensor, lengths: list[int] | None = None) -> torch.Tensor:
        """Audio ``[B, channels, samples]`` to float32 embeddings ``[B, dimension, frames]``.

        ``lengths``: each item's length in samples (a ragged batch; see :meth:`ragged`); item
        ``i``'s first ``ceil(lengths[i] / hop)`` frames are then what it gets alone, the rest
        unspecified.
        """
        return self._run("encoder", audio, lengths)

    def decode(self, embeddings: torch.Tensor, lengths: list[int] | None = None) -> torch.Tensor:
        """Embeddings ``[B, dimension, frames]`` to float32 audio ``[B, channels, frames * hop]``.

        ``lengths``: each item's length in frames (a ragged batch); item ``i``'s first
        ``lengths[i] * hop`` samples are then what it gets alone, the rest unspecified.
        """
        return self._run("decoder", embeddings, lengths)

    def quantize(self, embeddings: torch.Tensor, n_q: int) -> torch.Tensor:
        """Embeddings ``[B, dimension, frames]`` to int64 codes ``[B, n_q, frames]``: a search on CUDA
        in one launch (:func:`~fastencodec.kernels.cuda.residual_codes`), its products as
        :data:`~fastencodec.kernels.cuda.CODE_PRECISION` gives for the mode, else the quantizer's own
        (float32 on CPU, float64 on CUDA)."""
        quantizer = self.model.quantizer
        if not self._uses_kernels():
            return _per_item(lambda item: quantizer.encode(item, n_q), embeddings.float())
        from fastencodec.kernels.cuda import CODE_PRECISION, residual_codes

        batch, dim, frames = embeddings.shape
        residual = embeddings.float().transpose(1, 2).reshape(-1, dim).contiguous()
        embed = quantizer.embed[:n_q].contiguous()
        embed_sq = quantizer.embed_sq[:n_q].reshape(n_q, -1).contiguous()
        codes = residual_codes(residual, embed, embed_sq, CODE_PRECISION[self.precision])
        return codes.view(batch, frames, n_q).transpose(1, 2)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, frames]`` to summed code vectors ``[B, dimension, frames]`` (float32)."""
        return self.model.quantizer.decode(codes)


def _weights_version(network: torch.nn.Module) -> tuple:
    """The storage and version counter of every tensor of ``network``: changes when a weight is
    replaced or written in place (inference tensors, which have no counter, count by storage)."""
    version = []
    for tensor in (*network.parameters(), *network.buffers()):
        try:
            version.append((tensor.data_ptr(), tensor._version))
        except RuntimeError:
            version.append((tensor.data_ptr(), None))
    return tuple(version)


def _per_item(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to each item ``x[i:i+1]`` alone, results concatenated (CPU batch invariance)."""
    if x.shape[0] == 1:
        return fn(x)
    return torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])])
