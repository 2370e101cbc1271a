"""Shared test setup.

Meta's reference package ``encodec`` imports ``torchaudio`` at module level (only to call
it in code paths the tests never use), and torchaudio is not installed. A bare stand-in
module lets ``import encodec`` succeed so the tests can use its reference primitives.
"""

import pytest
import torch

from tests import support as reference

reference.install_torchaudio_standin()


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests: tiny models run many times faster on one thread
    than on cores other processes share, and Meta's LM coder and ours then run as a CLI on one core
    does (the BLAS picks kernels per thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Random-weight reference models, saved in their published formats (session-wide, built once).


@pytest.fixture(scope="session")
def meta24(tmp_path_factory):
    """(Meta 24 kHz reference model, path of its state dict saved as a .th file)."""
    return reference.meta_model("24khz", tmp_path_factory.mktemp("meta24"))


@pytest.fixture(scope="session")
def meta48(tmp_path_factory):
    """(Meta 48 kHz reference model, path of its state dict saved as a .th file)."""
    return reference.meta_model("48khz", tmp_path_factory.mktemp("meta48"))


@pytest.fixture(scope="session")
def hf24(tmp_path_factory):
    """(transformers 24 kHz EncodecModel, its save_pretrained directory)."""
    return reference.hf_model(reference.HF_24KHZ, tmp_path_factory.mktemp("hf24"))


@pytest.fixture(scope="session")
def hf48(tmp_path_factory):
    return reference.hf_model(reference.HF_48KHZ, tmp_path_factory.mktemp("hf48"))


@pytest.fixture(scope="session")
def hf32(tmp_path_factory):
    return reference.hf_model(reference.HF_32KHZ, tmp_path_factory.mktemp("hf32"))


@pytest.fixture(scope="session")
def codec24(meta24):
    """fastencodec's EnCodec loaded from the Meta 24 kHz checkpoint (shared; do not mutate)."""
    from fastencodec import EnCodec

    return EnCodec.from_pretrained(meta24[1])


@pytest.fixture(scope="session")
def codec48(meta48):
    """fastencodec's EnCodec loaded from the Meta 48 kHz checkpoint (shared; do not mutate)."""
    from fastencodec import EnCodec

    return EnCodec.from_pretrained(meta48[1])


@pytest.fixture(scope="session")
def tiny24(tmp_path_factory):
    """A tiny random-weight transformers checkpoint directory (``support.TINY``, 24 kHz layout)."""
    return reference.save_tiny(tmp_path_factory.mktemp("tiny24"))


@pytest.fixture(scope="session")
def tiny48(tmp_path_factory):
    """A tiny random-weight transformers checkpoint directory in the 48 kHz layout (segmented, normalising)."""
    segmented = {"sampling_rate": 48_000, "audio_channels": 2, "target_bandwidths": [3.0], "use_causal_conv": False}
    segmented |= {"norm_type": "time_group_norm", "normalize": True, "chunk_length_s": 1.0, "overlap": 0.01}
    return reference.save_tiny(tmp_path_factory.mktemp("tiny48"), **segmented)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch hub cache holding random-weight entropy-coding LMs where Meta's package looks for them
    (``TORCH_HOME`` for the module's tests)."""
    home = tmp_path_factory.mktemp("torch_home")
    reference.save_lm_checkpoints(home, {"encodec_24khz": 11, "encodec_48khz": 12})
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home))
    yield home
    mp.undo()
