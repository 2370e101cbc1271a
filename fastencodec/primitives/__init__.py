"""Signal-processing building blocks shared by the codec and the CLI."""

from fastencodec.io.resample import StreamResampler, resample

__all__ = ["StreamResampler", "resample"]
