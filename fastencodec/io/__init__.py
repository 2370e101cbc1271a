"""Audio input and output: files, raw PCM, resampling, atomic outputs."""

from fastencodec.io.conform import conformed_blocks, load_audio

__all__ = ["conformed_blocks", "load_audio"]
