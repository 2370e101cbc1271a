"""Corpus tokenization: folders, path lists or JSONL manifests of audio -> Parquet token shards.

``tokenize_corpus`` writes ``DIR/shard-00000.parquet``, ... and ``DIR/manifest.json``;
``read_shards`` yields the rows back (codes, or :class:`~fastencodec.tokens.Tokens`) for training;
``detokenize`` decodes shards back to audio files. The same jobs run from the command line as
``fastencodec tokenize`` and ``fastencodec detokenize``.
"""

from fastencodec.corpus.api import CorpusRow, detokenize, read_manifest, read_shards, tokenize_corpus

__all__ = ["CorpusRow", "detokenize", "read_manifest", "read_shards", "tokenize_corpus"]
