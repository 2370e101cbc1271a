"""Tokenizing on a Ray cluster with Ray Data (optional extra: ``pip install 'fastencodec[ray]'``).

Stages: the plan (the same shards as ``tokenize_corpus``) -> audio decoding tasks on CPUs ->
``map_batches`` over a pool of encoder actors (one GPU each, or CPU) -> the driver, which
writes each shard when its last row comes back. Shards, manifest, errors and resume are those
of the local pipeline, byte for byte. Each item travels whole through Ray's object store, so
keep very long files (hours) for the local pipeline, which streams them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastencodec.codec import EnCodec
from fastencodec.corpus.batching import Coded, encode_group
from fastencodec.corpus.ranks import Rank
from fastencodec.corpus.run import CorpusRun, Summary
from fastencodec.corpus.sources import Item
from fastencodec.corpus.workers import Failed, item_messages


def tokenize_with_ray(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    model: str | os.PathLike[str] = "encodec-24khz",
    bandwidth: float | None = None,
    *,
    shard_size: int = 1000,
    precision: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    device: str | None = None,
    batch_size: int = 32,
) -> Summary:
    """Tokenize ``inputs`` into ``out`` as :func:`~fastencodec.corpus.tokenize_corpus` does, on Ray.

    Uses the running Ray instance (``ray.init`` first to pick one; Ray Data starts a local one
    otherwise).

    Args:
        inputs, out, bandwidth, shard_size, precision: as for ``tokenize_corpus``.
        model: a model name, repo id or checkpoint path every actor can load.
        actors: encoder actors.
        gpus_per_actor: GPUs each actor reserves (0: CPU actors).
        device: the actors' torch device (default: ``cuda`` when ``gpus_per_actor`` > 0, else ``cpu``).
        batch_size: items per ``map_batches`` call.

    Raises:
        ImportError: Ray (with Ray Data) is not installed.
    """
    try:
        import ray.data
    except ImportError:
        raise ImportError("the Ray adapter needs Ray Data: pip install 'fastencodec[ray]'") from None
    precision = precision or "exact"
    codec = EnCodec.from_pretrained(model, precision=precision)  # on the driver's CPU: for the plan and manifest
    run = CorpusRun([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs, out, codec, bandwidth,
                    shard_size, Rank())
    todo = run.items()
    if todo:
        rows = [
            {"index": index, "path": item.path, "source": os.path.abspath(item.source),  # workers' own cwd
             "offset": np.nan if item.offset is None else item.offset,
             "duration": np.nan if item.duration is None else item.duration}
            for index, item in todo
        ]
        dataset = ray.data.from_items(rows).map(
            _Decode(codec.sample_rate, codec.channels)
        ).map_batches(
            _Encode,
            fn_constructor_kwargs={"model": os.fspath(model), "bandwidth": run.bandwidth, "precision": precision,
                                   "device": device or ("cuda" if gpus_per_actor else "cpu")},
            batch_size=batch_size,
            batch_format="numpy",
            num_gpus=gpus_per_actor,
            concurrency=actors,
        )
        for row in dataset.iter_rows():
            run.add(_result(row))
    return run.finish()


class _Decode:
    """Ray task: one plan row -> its conformed audio as bytes (float32 [channels, samples]) or an error."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate, self.channels = sample_rate, channels

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        offset, duration = (None if np.isnan(row[key]) else float(row[key]) for key in ("offset", "duration"))
        item = Item(row["path"], row["source"], offset, duration)
        (message,) = item_messages(int(row["index"]), item, self.sample_rate, self.channels, np.iinfo(np.int64).max)
        if isinstance(message, Failed):
            return {"index": message.index, "audio": b"", "samples": 0, "error": message.reason}
        return {"index": message.index, "audio": message.audio.tobytes(), "samples": message.audio.shape[1],
                "error": ""}


class _Encode:
    """Ray actor: a batch of decoded rows -> codes (bytes, int16 [codebooks, frames]) and scales."""

    def __init__(self, model: str, bandwidth: float, precision: str, device: str) -> None:
        self.codec = EnCodec.from_pretrained(model, device=device, precision=precision)
        self.num_codebooks = self.codec.codebooks_for(bandwidth)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        channels = self.codec.channels
        items = [
            (int(index), np.frombuffer(audio, np.float32).reshape(channels, int(samples)))
            for index, audio, samples, error in zip(batch["index"], batch["audio"], batch["samples"], batch["error"])
            if not error
        ]
        items.sort(key=lambda pair: pair[1].shape[1])
        coded = {result.index: result for result in encode_group(self.codec, self.num_codebooks, items)}
        out: dict[str, list] = {"index": [], "codes": [], "codebooks": [], "samples": [], "scales": [], "error": []}
        for index, error in zip(batch["index"], batch["error"]):
            result = coded.get(int(index))
            out["index"].append(int(index))
            out["codes"].append(b"" if result is None else result.codes.tobytes())
            out["codebooks"].append(0 if result is None else result.codes.shape[0])
            out["samples"].append(0 if result is None else result.samples)
            out["scales"].append(b"" if result is None else result.scales.tobytes())
            out["error"].append(str(error))
        return {key: np.array(values, dtype=object if key in ("codes", "scales", "error") else np.int64)
                for key, values in out.items()}


def _result(row: dict[str, Any]) -> Coded | Failed:
    if row["error"]:
        return Failed(int(row["index"]), str(row["error"]))
    codes = np.frombuffer(row["codes"], np.int16).reshape(int(row["codebooks"]), -1).copy()
    return Coded(int(row["index"]), codes, int(row["samples"]), np.frombuffer(row["scales"], np.float32).copy())


__all__ = ["tokenize_with_ray"]
