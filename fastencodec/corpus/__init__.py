"""Corpus tokenization: folders, path lists or JSONL manifests of audio -> Parquet token shards.

``tokenize_corpus`` writes ``DIR/shard-00000.parquet``, ... and ``DIR/manifest.json``;
``read_shards`` yields the rows back (codes, or :class:`~fastencodec.tokens.Tokens`) for training;
``detokenize`` decodes shards back to audio files. The same jobs run from the command line as
``fastencodec tokenize`` and ``fastencodec detokenize``.
"""

from typing import Any

__all__ = ["CorpusRow", "detokenize", "read_manifest", "read_shards", "tokenize_corpus"]


def __getattr__(name: str) -> Any:
    """The API, imported on first use (it needs pyarrow, the ``corpus`` extra; the CLI does not until run)."""
    if name in __all__:
        from fastencodec.corpus import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
