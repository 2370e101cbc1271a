"""fastencodec: Meta's EnCodec neural audio codec on PyTorch, bit-faithful and fast."""

from fastencodec.codec import EnCodec
from fastencodec.config import EncodecConfig
from fastencodec.tokens import Tokens

__all__ = ["EnCodec", "EncodecConfig", "Tokens"]
__version__ = "0.1.0"


def generate(prompts=None, duration: float = 10.0, *, model: str | None = None, device: str | None = None, **kwargs):
    """Text to music with MusicGen (``pip install fastencodec[musicgen]``): audio ``[batch, channels,
    samples]`` at 32 kHz. Loads ``model`` (default ``facebook/musicgen-small``) on first use and keeps
    it; other arguments are those of :meth:`fastencodec.musicgen.MusicGen.generate`."""
    from fastencodec.musicgen import generate as musicgen

    return musicgen.default_model(model or musicgen.DEFAULT_MODEL, device).generate(prompts, duration, **kwargs)
