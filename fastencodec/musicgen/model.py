"""The :class:`MusicGen` generator: prompts in, audio ``[batch, channels, samples]`` at 32 kHz out.

The parts have their own modules: ``text.py`` (prompts to text states), ``stepping.py`` (the
decoding step, on the device), ``windows.py`` (the delay pattern over one window, and sliding
windows past the model's 30 s), ``sampling.py`` (guidance, filters, seeds), ``loading.py``
(checkpoints); this one ties them together and checks the arguments.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from fastencodec.arrays import Array, as_tensor, audio_layout, check_signal, to_channels
from fastencodec.codec import EnCodec
from fastencodec.musicgen.config import MusicGenConfig
from fastencodec.musicgen.decoder import KVCache, MusicGenLM
from fastencodec.musicgen.loading import DEFAULT_MODEL, build_parts, read_config, read_tokenizer, read_weights, resolve
from fastencodec.musicgen.memory import check_fits
from fastencodec.musicgen.sampling import ItemStreams, Sampling, item_seeds
from fastencodec.musicgen.stepping import Decoders, Decoding
from fastencodec.musicgen.t5 import T5Encoder
from fastencodec.musicgen.text import Prompts, TextConditioner, check_prompts
from fastencodec.musicgen.windows import LogitsCallback, Progress, Windows, decode_window

MAX_DURATION = 3600.0
"""Longest audio one call generates, in seconds."""


class MusicGen:
    """A MusicGen model: T5 text encoder, decoder LM and the EnCodec decoder, on one device.

    Attributes:
        max_duration: seconds of audio the LM sees at once (30 for the published models); longer
            requests slide a window over the audio (see ``extend_stride`` of :meth:`generate`).
        use_cuda_graphs: replay each decoding step as a CUDA graph on GPU (default True).
        use_triton: in those captured steps, run the decoder's linear layers (with the LayerNorm
            before and the GELU or residual add after each) as the few-row Triton kernel of
            :mod:`fastencodec.kernels.few_rows` when Triton is installed and a step has at most
            16 rows (8 items with guidance); default True.
    """

    def __init__(
        self,
        config: MusicGenConfig,
        text_encoder: T5Encoder,
        lm: MusicGenLM,
        text_proj: nn.Linear | None,
        codec: EnCodec,
        tokenizer,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.config = config
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.lm = lm.eval().requires_grad_(False)
        self.text_proj = None if text_proj is None else text_proj.eval().requires_grad_(False)
        self.codec = codec
        self.tokenizer = tokenizer
        self.max_duration = 30.0
        self.use_cuda_graphs = True
        self.use_triton = True
        self.text = TextConditioner(
            tokenizer, self.text_encoder, self.text_proj, config.text.pad_token_id, config.decoder.hidden
        )
        self._lock = threading.Lock()
        self._decoders = Decoders()
        self.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"), dtype)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        cache_dir: str | Path | None = None,
        revision: str | None = None,
    ) -> MusicGen:
        """Load a transformers MusicGen checkpoint: a local directory, a Hugging Face repo id
        (``facebook/musicgen-small``, ``-medium``, ``-large``, ``-stereo-*``) or its short name.

        Args:
            name_or_path: directory with ``config.json``, ``model.safetensors`` (or shards) and
                ``tokenizer.json``; or a repo id / short name, downloaded on first use.
            device: where to run (default: ``cuda`` if available, else ``cpu``).
            dtype: floating dtype of the decoder LM (default float32; bfloat16/float16 on GPU are
                faster). The text encoder and the codec stay float32.

        Raises:
            FileNotFoundError: a file is missing (config, weights, tokenizer).
            ValueError: the checkpoint is not MusicGen, is incomplete, or holds only pickles.
        """
        directory = resolve(name_or_path, cache_dir, revision)
        config = read_config(directory)
        tokenizer = read_tokenizer(directory)
        try:
            return cls.from_tensors(config, read_weights(directory), tokenizer, device, dtype)
        except ValueError as exc:
            raise ValueError(f"{directory}: {exc}") from None

    @classmethod
    def from_tensors(
        cls,
        config: MusicGenConfig | dict,
        tensors: dict[str, torch.Tensor],
        tokenizer,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MusicGen:
        """Build from a config (a :class:`MusicGenConfig` or a transformers ``MusicgenConfig`` dict),
        the tensors of a ``MusicgenForConditionalGeneration`` state dict and a ``tokenizers.Tokenizer``.

        Raises:
            ValueError: the config is not MusicGen's or the tensors do not fit it.
        """
        if isinstance(config, dict):
            config = MusicGenConfig.from_hf(config)
        return cls(config, *build_parts(config, tensors), tokenizer, device, dtype)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MusicGen:
        """Move to ``device`` and/or run the decoder LM in floating ``dtype``; returns self."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch dtype, not {dtype}")
        with self._lock:
            self._decoders.clear()
            if device is not None:
                device = torch.device(device)
                for module in (self.text_encoder, self.lm, self.text_proj):
                    if module is not None:
                        module.to(device)
                self.codec.to(device)
            if dtype is not None:
                self.lm.to(dtype)
        return self

    # -- properties ---------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.lm.lm_heads[0].weight.device

    @property
    def sample_rate(self) -> int:
        """Audio sample rate in Hz (32000 for the published models)."""
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> int:
        """Token frames per second (Hz)."""
        return self.codec.frame_rate

    @property
    def channels(self) -> int:
        """Audio channels generated: 1, or 2 for the stereo models."""
        return self.config.decoder.audio_channels

    @property
    def num_codebooks(self) -> int:
        """Token streams per frame (stereo: left and right interleaved)."""
        return self.config.decoder.codebooks

    # -- generation -----------------------------------------------------------
    def generate(
        self,
        prompts: Prompts = None,
        duration: float = 10.0,
        *,
        guidance_scale: float = 3.0,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        seed: int | Sequence[int] | None = None,
        do_sample: bool = True,
        audio_prompt: Array | None = None,
        extend_stride: float = 18.0,
        return_tokens: bool = False,
        progress: Progress | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Generate music for text prompts.

        Args:
            prompts: a text, a list of texts (one item each; ``None`` items are unconditional), or
                None for one unconditional item (or one per ``audio_prompt`` item).
            duration: seconds of audio per item, the audio prompt included.
            guidance_scale: classifier-free guidance weight (1: off).
            top_k: sample among the ``top_k`` most likely tokens (0: all).
            top_p: nucleus sampling threshold (0: off); applied after top-k.
            temperature: softmax temperature (> 0).
            seed: item ``i`` samples from its own ``torch.Generator`` seeded with ``seed + i``
                (an int in [0, 2**63)), or with ``seed[i]`` (a list, one per item); None: a fresh
                random ``seed``. Item ``i`` of a batch thus gets the tokens it gets alone with
                ``seed + i``. The global RNG is never touched.
            do_sample: False decodes greedily.
            audio_prompt: audio at ``sample_rate`` Hz to continue, ``[samples]``, ``[channels,
                samples]`` as ``[1, channels, samples]``, or ``[batch, channels, samples]``; it is
                encoded with the codec and the result starts with its (re-synthesised) audio.
            extend_stride: for ``duration`` beyond ``max_duration``: seconds the window advances,
                each new window conditioned on the last ``max_duration - extend_stride`` seconds.
            return_tokens: also return the codes ``[batch, codebooks, frames]``.
            progress: called as ``progress(seconds_done, seconds_total)`` after each step.

        Returns:
            Audio ``[batch, channels, samples]`` (float32, CPU) at ``sample_rate`` Hz, and the
            codes when ``return_tokens``.

        Raises:
            ValueError: bad prompts, duration or sampling settings.
            MemoryError: the batch does not fit in the device's memory.
        """
        tokens = self.generate_tokens(
            prompts,
            duration,
            guidance_scale=guidance_scale,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            seed=seed,
            do_sample=do_sample,
            audio_prompt=audio_prompt,
            extend_stride=extend_stride,
            progress=progress,
        )
        try:
            audio = self.decode(tokens)
        except torch.cuda.OutOfMemoryError as exc:
            raise MemoryError(f"out of GPU memory decoding {tokens.shape[0]} items: decode fewer at once") from exc
        return (audio, tokens) if return_tokens else audio

    def generate_tokens(
        self,
        prompts: Prompts = None,
        duration: float = 10.0,
        *,
        guidance_scale: float = 3.0,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        seed: int | Sequence[int] | None = None,
        do_sample: bool = True,
        audio_prompt: Array | None = None,
        extend_stride: float = 18.0,
        progress: Progress | None = None,
        logits_callback: LogitsCallback | None = None,
    ) -> torch.Tensor:
        """As :meth:`generate`, returning the codes ``[batch, codebooks, frames]`` (int64, CPU) only.

        ``logits_callback(step, logits)`` sees the guided logits of every step of every window.
        """
        sampling = Sampling(guidance_scale, top_k, top_p, temperature, do_sample)
        sampling.check(self.config.decoder.vocab_size)
        frames = self._frames(duration)
        prompt_codes = None if audio_prompt is None else self.encode_prompt(audio_prompt)
        texts = check_prompts(prompts, None if prompt_codes is None else prompt_codes.shape[0])
        if prompt_codes is not None:
            if prompt_codes.shape[0] == 1 and len(texts) > 1:
                prompt_codes = prompt_codes.expand(len(texts), -1, -1)
            if prompt_codes.shape[-1] >= frames:
                raise ValueError(
                    f"audio_prompt is {prompt_codes.shape[-1] / self.frame_rate:.2f} s long; duration "
                    f"({duration} s) must be longer"
                )
        if all(t is None for t in texts):  # guidance would mix the unconditional rows with themselves
            sampling = Sampling(1.0, top_k, top_p, temperature, do_sample)
        prompt_frames = 0 if prompt_codes is None else prompt_codes.shape[-1]
        windows = Windows.plan(frames, self.frame_rate, self.max_duration, extend_stride, prompt_frames)
        self._check_memory(len(texts) * (2 if sampling.guided else 1), min(frames, windows.window))
        streams = ItemStreams(item_seeds(seed, len(texts)), self.device)
        try:
            with self._lock, torch.inference_mode():
                memory, mask = self.text(texts, sampling.guided, self.device, self.lm.lm_heads[0].weight.dtype)

                def decoding_for(steps: int) -> Decoding:
                    return self._decoders.get(self.lm, memory, mask, sampling, steps, self._graphed, self._kernels)

                def one_window(prompt: torch.Tensor | None, length: int, report: Callable[[int], None]) -> torch.Tensor:
                    return decode_window(
                        self.config.decoder, decoding_for, prompt, length, len(texts), sampling, streams, report,
                        logits_callback,
                    )

                start = None if prompt_codes is None else prompt_codes.to(self.device)
                return windows.slide(start, one_window, self.frame_rate, progress).cpu()
        except torch.cuda.OutOfMemoryError as exc:
            raise MemoryError(
                f"out of GPU memory generating {len(texts)} x {duration} s; use a smaller batch or a shorter "
                f"duration ({str(exc).splitlines()[0]})"
            ) from exc

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[batch, codebooks, frames]`` -> audio ``[batch, channels, samples]`` (float32, CPU)."""
        codes = codes.to(self.device)
        if self.channels == 1:
            return self.codec.decode(codes).float().cpu()
        left, right = self.codec.decode(codes[:, 0::2]), self.codec.decode(codes[:, 1::2])
        return torch.cat([left, right], dim=1).float().cpu()

    def encode_prompt(self, audio: Array) -> torch.Tensor:
        """Audio prompt (layouts as in :meth:`generate`) -> codes ``[batch, codebooks, frames]``."""
        x = audio_layout(check_signal(as_tensor(audio, "audio_prompt"), "audio_prompt"), "audio_prompt").float()
        per_channel = self.num_codebooks // self.channels
        bandwidth = next(
            (b for b in sorted(self.codec.bandwidths) if self.codec.codebooks_for(b) >= per_channel), None
        )
        if bandwidth is None:
            raise ValueError(f"the codec has no bandwidth with {per_channel} codebooks")
        x = to_channels(x, self.channels).to(self.device)
        streams = [self.codec.encode(x[:, c : c + 1], bandwidth).codes[:, :per_channel] for c in range(self.channels)]
        codes = torch.stack(streams, dim=2).flatten(1, 2)  # [batch, codebooks]: channels interleaved
        return torch.as_tensor(codes).long()

    # -- internals ------------------------------------------------------------
    def _frames(self, duration: float) -> int:
        if isinstance(duration, bool) or not isinstance(duration, numbers.Real) or not math.isfinite(duration):
            raise ValueError(f"duration must be a finite number of seconds, got {duration!r}")
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration} s")
        if duration > MAX_DURATION:
            raise ValueError(f"duration {duration} s is longer than the {MAX_DURATION:.0f} s one call generates")
        return max(1, round(duration * self.frame_rate))

    def _check_memory(self, rows: int, frames: int) -> None:
        steps = frames + max(self.config.decoder.delays) + 1
        needed = KVCache.bytes_needed(self.config.decoder, rows, steps, self.lm.lm_heads[0].weight.dtype)
        check_fits(needed, self.device, f"its attention cache ({rows} rows x {steps} steps)")

    @property
    def _graphed(self) -> bool:
        return self.device.type == "cuda" and self.use_cuda_graphs

    @property
    def _kernels(self) -> bool:
        return self._graphed and self.use_triton
