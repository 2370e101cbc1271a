"""fastencodec: Meta's EnCodec neural audio codec on PyTorch, bit-faithful and fast."""

from typing import Any

from fastencodec.codec import EnCodec
from fastencodec.config import EncodecConfig
from fastencodec.tokens import Tokens

__all__ = ["EnCodec", "EncodecConfig", "Tokens", "generate"]
__version__ = "0.1.0"


def generate(
    prompts: str | list[str | None] | None = None,
    duration: float = 10.0,
    *,
    model: str | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> Any:
    """Text to music with MusicGen (``pip install fastencodec[musicgen]``).

    Loads ``model`` (default ``facebook/musicgen-small``; CC-BY-NC 4.0 weights) on ``device`` on
    first use and keeps it; the other arguments are those of
    :meth:`fastencodec.musicgen.MusicGen.generate`.

    Returns:
        Audio ``[batch, channels, samples]`` (float32 torch tensor) at 32 kHz, and the tokens when
        ``return_tokens=True``.
    """
    from fastencodec.musicgen import generate as musicgen

    return musicgen.default_model(model or musicgen.DEFAULT_MODEL, device).generate(prompts, duration, **kwargs)
