"""MusicGen text-to-music on fastencodec's 32 kHz codec (``pip install fastencodec[musicgen]``).

Text -> T5 encoder (``t5.py``) -> decoder language model over delayed codebooks (``decoder.py``,
``delay.py``, ``sampling.py``) -> EnCodec tokens -> :class:`fastencodec.EnCodec` decoder -> audio.
``generate.py`` holds the :class:`MusicGen` class; ``loading.py`` reads transformers checkpoints.
"""

from fastencodec.musicgen.generate import MusicGen

__all__ = ["MusicGen"]
