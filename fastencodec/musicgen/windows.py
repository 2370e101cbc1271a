"""Generation past the LM's window: audiocraft's sliding continuation, and the decode of one window.

A request of ``frames`` frames longer than the model's ``window`` (30 s for the published models)
is made of windows that advance ``stride`` frames; each new window is conditioned on the last
``window - stride`` frames of the one before, and contributes its new frames only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastencodec.musicgen.config import DecoderConfig
from fastencodec.musicgen.delay import DelayPattern
from fastencodec.musicgen.sampling import ItemStreams, Sampling
from fastencodec.musicgen.stepping import Decoding, Pace

Progress = Callable[[float, float], None]
"""Called with (seconds of audio generated, seconds requested)."""
LogitsCallback = Callable[[int, torch.Tensor], None]
"""Called with (sequence step, guided logits ``[batch, codebooks, vocab]`` the tokens of that step were
chosen from; a buffer the next step overwrites: clone it to keep it)."""
DecodingFor = Callable[[int], Decoding]
"""(sequence steps) -> the decode buffers and step of a window, text memory set in its cache."""


@dataclass(frozen=True)
class Windows:
    """How ``frames`` frames are cut into windows.

    Attributes:
        frames: frames requested (the audio prompt's included).
        window: frames the LM sees at once.
        stride: frames each window advances (``window`` when one window suffices).
    """

    frames: int
    window: int
    stride: int

    @classmethod
    def plan(
        cls, frames: int, frame_rate: float, max_duration: float, extend_stride: float, prompt_frames: int = 0
    ) -> Windows:
        """Windows of ``max_duration`` seconds advancing ``extend_stride`` seconds.

        Raises:
            ValueError: an audio prompt that fills the window, or ``extend_stride`` out of
                ``(0, max_duration)`` when more than one window is needed.
        """
        window = max(1, int(max_duration * frame_rate))
        if prompt_frames >= window:
            raise ValueError(f"audio_prompt must be shorter than the model's {max_duration} s window")
        stride = window
        if frames > window:
            if not 0 < extend_stride < max_duration:
                raise ValueError(f"extend_stride must be in (0, {max_duration}) s, got {extend_stride}")
            stride = max(1, int(extend_stride * frame_rate))
        return cls(frames, window, stride)

    def slide(
        self,
        prompt: torch.Tensor | None,
        generate: Callable[[torch.Tensor | None, int, Callable[[int], None]], torch.Tensor],
        frame_rate: float,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Codes ``[batch, codebooks, frames]`` starting with ``prompt`` (``[batch, codebooks, P]``).

        Args:
            prompt: known first frames, or None.
            generate: ``generate(prompt, length, report)`` -> codes ``[batch, codebooks, length]``
                continuing ``prompt``; it calls ``report(n)`` with the frames of the window done.
            frame_rate: frames per second (for ``progress``).
            progress: called as ``progress(seconds_done, seconds_total)``.
        """
        pieces = [] if prompt is None else [prompt]
        offset = 0
        while True:
            have = 0 if prompt is None else prompt.shape[-1]
            if offset + have >= self.frames:
                break
            length = min(self.frames - offset, self.window)

            def report(n: int, offset: int = offset, have: int = have) -> None:
                if progress is not None:  # frames a window starts with were reported by the one before
                    progress((offset + max(n, have)) / frame_rate, self.frames / frame_rate)

            codes = generate(prompt, length, report)
            pieces.append(codes[..., have:])
            prompt = codes[..., self.stride :]
            offset += self.stride
        return torch.cat(pieces, dim=-1)[..., : self.frames]


def decode_window(
    cfg: DecoderConfig,
    decoding_for: DecodingFor,
    prompt: torch.Tensor | None,
    frames: int,
    batch: int,
    sampling: Sampling,
    streams: ItemStreams,
    report: Callable[[int], None],
    logits_callback: LogitsCallback | None = None,
) -> torch.Tensor:
    """One window through the delay pattern: codes ``[batch, codebooks, frames]`` continuing ``prompt``.

    Args:
        cfg: the decoder LM's config (codebooks, delays, start token).
        decoding_for: gives the decode buffers and step for a window of that many sequence steps.
        prompt: known first frames ``[batch, codebooks, P]`` (P < frames), or None.
        frames: frames of the window.
        batch: items (half the LM rows when guided).
        sampling: how tokens are chosen.
        streams: one random stream per batch item.
        report: called with the frames done after each step.
        logits_callback: sees the guided logits of every step.
    """
    pattern = DelayPattern(cfg.delays, frames, cfg.start_token_id)  # transformers pads with the start token
    decoding = decoding_for(pattern.steps)
    sequence = pattern.build(prompt, batch, decoding.sequence.device)
    first = pattern.first_unknown(0 if prompt is None else prompt.shape[-1])
    uniforms = streams.uniforms(pattern.steps, cfg.codebooks) if sampling.do_sample else None
    decoding.start(sequence, uniforms, first)
    max_delay = max(cfg.delays)
    pace = Pace(decoding.sequence.device)
    for t in range(first, pattern.steps):
        decoding.advance()  # queued on the device: the host does not wait for this step
        if logits_callback is not None:
            logits_callback(t, decoding.mixed)
        done = pace.after(t)
        if done is not None:
            report(min(max(done - max_delay, 0), frames))
    report(min(max(pace.finish(pattern.steps - 1) - max_delay, 0), frames))
    return pattern.frames_of(decoding.sequence[..., : pattern.steps])
