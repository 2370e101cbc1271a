"""Text conditioning: prompts checked, tokenized and encoded into the states the decoder attends to."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastencodec.musicgen.t5 import T5Encoder

Prompts = str | Sequence[str | None] | None
"""A text, a list of texts (``None`` items are unconditional), or None."""
TEXT_BUCKET = 16
"""Text lengths are padded to a multiple of this many tokens on GPU (fewer CUDA graph shapes)."""


def check_prompts(prompts: Prompts, audio_batch: int | None) -> list[str | None]:
    """The items of ``prompts``: one per text; None gives one unconditional item (or one per
    ``audio_batch`` item of an audio prompt).

    Raises:
        ValueError: an empty list, an item that is not a string or None, or a count that does not
            match the audio prompt's batch.
    """
    if prompts is None:
        return [None] * (audio_batch or 1)
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise ValueError("prompts is an empty list; pass None for unconditional generation")
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, str):
            raise ValueError(f"prompts[{i}] is a {type(item).__name__}, expected a string or None")
    if audio_batch not in (None, 1, len(items)):
        raise ValueError(f"{len(items)} prompts for an audio_prompt batch of {audio_batch}")
    return items


class TextConditioner:
    """Prompts -> text states: the checkpoint's tokenizer, the T5 encoder and the optional projection
    to the decoder's width.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (no padding; this pads).
        encoder: the T5 encoder.
        projection: ``enc_to_dec_proj`` (None when T5's width is the decoder's).
        pad_token_id: T5's pad token.
        width: the decoder's hidden size.
    """

    def __init__(self, tokenizer, encoder: T5Encoder, projection: nn.Linear | None, pad_token_id: int, width: int):
        self.tokenizer, self.encoder, self.projection = tokenizer, encoder, projection
        self.pad_token_id, self.width = pad_token_id, width

    def __call__(
        self, texts: list[str | None], guided: bool, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states ``[rows, tokens, width]`` (``dtype``) and mask ``[rows, tokens]`` (bool) on
        ``device``; rows doubled when ``guided``, the second half unconditional (zeros, nothing to
        attend to). ``None`` items are unconditional rows too."""
        given = [i for i, t in enumerate(texts) if t is not None]
        encoded = [self.tokenizer.encode(texts[i]).ids for i in given]
        length = max([len(ids) for ids in encoded] + [1])
        if device.type == "cuda":
            length = -(-length // TEXT_BUCKET) * TEXT_BUCKET
        ids = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, row in zip(given, encoded):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        ids, mask = ids.to(device), mask.to(device)
        memory = torch.zeros(len(texts), length, self.width, device=device)
        if given:
            index = torch.tensor(given, device=device)
            states = self.encoder(ids[index], mask[index])
            if self.projection is not None:
                states = self.projection(states)
            memory[index] = states * mask[index, :, None]
        if guided:
            memory = torch.cat([memory, torch.zeros_like(memory)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        return memory.to(dtype), mask
