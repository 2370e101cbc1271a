"""MusicGen text-to-music on fastencodec's 32 kHz codec (``pip install fastencodec[musicgen]``).

Text -> T5 encoder (``t5.py``, ``text.py``) -> decoder language model over delayed codebooks
(``decoder.py``, ``delay.py``), one step at a time on the device (``stepping.py``, ``sampling.py``),
window by window (``windows.py``) -> EnCodec tokens -> :class:`fastencodec.EnCodec` decoder -> audio.
``model.py`` holds the :class:`MusicGen` class, ``loading.py`` reads transformers checkpoints and
``defaults.py`` keeps the model ``fastencodec.generate`` uses.
"""

from fastencodec.musicgen.model import MusicGen

__all__ = ["MusicGen"]
