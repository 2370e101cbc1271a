"""fastencodec: Meta's EnCodec neural audio codec on PyTorch, bit-faithful and fast."""

from fastencodec.codec import EnCodec
from fastencodec.nn.config import EncodecConfig
from fastencodec.tokens import Tokens

__all__ = ["EnCodec", "EncodecConfig", "Tokens"]
__version__ = "0.1.0"
