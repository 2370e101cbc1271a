"""Entropy coding of EnCodec codes: Meta's LM mode (``"lm"``) and a portable mode (``"lmp1"``).

Modules by role: :mod:`.lm` (Meta's language model, stepped with a cache), :mod:`.graphed_lm`
(the same LM as Meta's own frame operations, captured as CUDA graphs on a GPU), :mod:`.cdf`
(quantized CDFs), :mod:`.arith` (the arithmetic coder), :mod:`.meta_lm` (the Meta-compatible
symbol coder), :mod:`.portable` (the portable integer LM and its coder), :mod:`.portable_kernel`
(that LM stepped on the CPU: the decoding loop and the encoder's CDFs), :mod:`.portable_pass` (that
LM over blocks of frames on any torch device),
:mod:`.fixed` (its fixed-point format and integer tables). They implement the
container's ``SymbolCoder`` seam (:mod:`fastencodec.formats.coders`, which looks them up by tag).
"""

from .arith import ArithmeticDecoder, ArithmeticEncoder, CoderError
from .cdf import integer_cdfs, meta_cdfs
from .graphed_lm import GraphedMetaLM
from .lm import LMConfig, MetaLM, MissingLMWeights, lm_checkpoint_path, lm_config, load_lm_state
from .meta_lm import MetaLMCoder
from .portable import PortableCoder, PortableLM

__all__ = [
    "ArithmeticDecoder",
    "ArithmeticEncoder",
    "CoderError",
    "GraphedMetaLM",
    "LMConfig",
    "MetaLM",
    "MetaLMCoder",
    "MissingLMWeights",
    "PortableCoder",
    "PortableLM",
    "integer_cdfs",
    "lm_checkpoint_path",
    "lm_config",
    "load_lm_state",
    "meta_cdfs",
]
