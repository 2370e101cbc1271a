"""fastencodec: Meta's EnCodec neural audio codec on PyTorch, bit-faithful and fast.

The one documented import path::

    from fastencodec import EnCodec, Tokens, compress, decompress, generate
"""

__version__ = "0.1.0"

from typing import Any  # noqa: E402

from fastencodec.codec import EnCodec  # noqa: E402
from fastencodec.engine.policy import RuntimePolicy  # noqa: E402
from fastencodec.formats.ecdc import DamagedSegmentWarning, EcdcError, EcdcReader, EcdcWriter  # noqa: E402
from fastencodec.formats.files import EcdcFile, ModelMismatchError, compress, decompress, read_ecdc  # noqa: E402
from fastencodec.io.conform import load_audio  # noqa: E402
from fastencodec.nn.config import EncodecConfig  # noqa: E402
from fastencodec.tokens import Tokens  # noqa: E402

__all__ = [
    "DamagedSegmentWarning",
    "EcdcError",
    "EcdcFile",
    "EcdcReader",
    "EcdcWriter",
    "EnCodec",
    "EncodecConfig",
    "ModelMismatchError",
    "RuntimePolicy",
    "Tokens",
    "__version__",
    "compress",
    "decompress",
    "generate",
    "load_audio",
    "read_ecdc",
]


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
    from fastencodec.musicgen.defaults import default_model

    return default_model(model, device).generate(prompts, duration, **kwargs)
