"""Parquet token shards: schema, atomic writing, reading rows back.

One row per item: ``path`` (string), ``codes`` (``list<list<int16>>``, ``[codebooks][frames]``),
``frames`` (int32), ``samples`` (int64, at the model's rate), ``duration`` (float64 seconds),
``scales`` (``list<float32>``: per-segment volumes of the 48 kHz model, empty otherwise), and
``offset`` (float64 seconds, only in corpora whose manifest cut segments). Files are
zstd-compressed with fixed settings, so the same rows always give the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastencodec.corpus.batching import Coded
from fastencodec.corpus.sources import Item
from fastencodec.io.atomic import AtomicOutput

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
METADATA_KEY = b"fastencodec"


def schema(with_offset: bool, metadata: dict | None = None) -> pa.Schema:
    """The shard schema; ``metadata`` (JSON-able) is stored under the ``fastencodec`` key."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("codes", pa.list_(pa.list_(pa.int16())), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("samples", pa.int64(), nullable=False),
        pa.field("duration", pa.float64(), nullable=False),
        pa.field("scales", pa.list_(pa.float32()), nullable=False),
    ]
    if with_offset:
        fields.append(pa.field("offset", pa.float64(), nullable=False))
    meta = None if metadata is None else {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
    return pa.schema(fields, metadata=meta)


def shard_table(rows: Sequence[tuple[Item, Coded]], sample_rate: int, shard_schema: pa.Schema) -> pa.Table:
    """A table of ``(item, coded)`` rows in the given order."""
    codes = [coded.codes for _, coded in rows]
    row_offsets = np.cumsum([0] + [c.shape[0] for c in codes], dtype=np.int64)
    list_offsets = np.cumsum([0] + [c.shape[1] for c in codes for _ in range(c.shape[0])], dtype=np.int64)
    if list_offsets[-1] >= 2**31:
        raise ValueError("a shard holds more than 2**31 codes; use a smaller --shard-size")
    values = np.concatenate([c.reshape(-1) for c in codes]) if codes else np.zeros(0, np.int16)
    inner = pa.ListArray.from_arrays(pa.array(list_offsets, pa.int32()), pa.array(values, pa.int16()))
    scales = [coded.scales for _, coded in rows]
    scale_offsets = np.cumsum([0] + [len(s) for s in scales], dtype=np.int32)
    flat_scales = np.concatenate(scales) if scales else np.zeros(0, np.float32)
    columns = {
        "path": pa.array([item.path for item, _ in rows], pa.string()),
        "codes": pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), inner),
        "frames": pa.array([c.shape[1] for c in codes], pa.int32()),
        "samples": pa.array([coded.samples for _, coded in rows], pa.int64()),
        "duration": pa.array([coded.samples / sample_rate for _, coded in rows], pa.float64()),
        "scales": pa.ListArray.from_arrays(pa.array(scale_offsets), pa.array(flat_scales, pa.float32())),
    }
    if "offset" in shard_schema.names:
        columns["offset"] = pa.array([item.offset or 0.0 for item, _ in rows], pa.float64())
    return pa.Table.from_pydict(columns, schema=shard_schema)


def write_shard(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically (temporary file, then rename)."""
    with AtomicOutput(path) as output:
        pq.write_table(table, output.file, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL)


def write_errors(path: Path, records: Sequence[dict]) -> None:
    """Write JSON lines atomically (an empty list removes ``path``)."""
    if not records:
        path.unlink(missing_ok=True)
        return
    with AtomicOutput(path) as output:
        output.file.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


def iter_shard_rows(path: str | os.PathLike[str], batch_rows: int = 256) -> Iterator[dict]:
    """Rows of one shard as dicts: ``codes`` int16 ``[codebooks, frames]``, ``scales`` float32, the rest as stored."""
    file = pq.ParquetFile(path)
    for batch in file.iter_batches(batch_size=batch_rows):
        data = {name: batch.column(name) for name in batch.schema.names}
        codes = data.pop("codes")
        scales = data.pop("scales")
        outer = codes.offsets.to_numpy()
        inner = codes.values.offsets.to_numpy()
        values = codes.values.values.to_numpy(zero_copy_only=False)
        scale_offsets = scales.offsets.to_numpy()
        scale_values = scales.values.to_numpy(zero_copy_only=False)
        plain = {name: column.to_pylist() for name, column in data.items()}
        for i in range(batch.num_rows):
            row = {name: column[i] for name, column in plain.items()}
            first, last = inner[outer[i]], inner[outer[i + 1]]
            row["codes"] = values[first:last].reshape(outer[i + 1] - outer[i], -1)
            row["scales"] = scale_values[scale_offsets[i] : scale_offsets[i + 1]]
            yield row
