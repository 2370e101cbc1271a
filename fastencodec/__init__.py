"""fastencodec: Meta's EnCodec neural audio codec on PyTorch, bit-faithful and fast.

The one documented import path::

    from fastencodec import EnCodec, Tokens, compress, decompress
"""

__version__ = "0.1.0"

from fastencodec.codec import EnCodec  # noqa: E402
from fastencodec.engine.policy import RuntimePolicy  # noqa: E402
from fastencodec.formats.ecdc import EcdcError, EcdcReader, EcdcWriter  # noqa: E402
from fastencodec.formats.files import EcdcFile, ModelMismatchError, compress, decompress, read_ecdc  # noqa: E402
from fastencodec.io.conform import load_audio  # noqa: E402
from fastencodec.nn.config import EncodecConfig  # noqa: E402
from fastencodec.tokens import Tokens  # noqa: E402

__all__ = [
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
    "load_audio",
    "read_ecdc",
]
