"""Meta's ``lm`` mode on a CUDA GPU: our graphed LM against Meta's ``LMModel`` on the same GPU, bit for
bit, and ``.ecdc`` files of Meta's ``compress(use_lm=True)`` on CUDA decoded by ours there, and back
(CUDA only; skipped elsewhere). Random LM weights, placed where Meta's package looks for them."""

import importlib
import io

import numpy as np
import pytest
import torch

from fastencodec.entropy import MetaLMCoder, lm_config
from fastencodec.entropy.graphed_lm import GraphedMetaLM
from fastencodec.formats.ecdc import EcdcError
from tests import support as reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

meta_compress = importlib.import_module("encodec.compress")

LAYOUTS = reference.LM_LAYOUTS


@pytest.fixture(scope="module")
def coders(torch_home):
    return {name: MetaLMCoder.for_model(name, device="cuda") for name in LAYOUTS}


@pytest.fixture(scope="module")
def meta_models():
    """Meta's 24 and 48 kHz models on CUDA, random weights and codebooks."""
    models = {}
    for seed, name in enumerate(LAYOUTS):
        rate, channels = (24000, 1) if name == "encodec_24khz" else (48000, 2)
        audio = reference.speech_like(rate, channels, 0.2, seed=seed)
        models[name] = reference.meta_codec_for_entropy(name, seed, audio).cuda()
    return models


def meta_frames(lm, codes):
    """Meta's probabilities ``[frames, K, card]`` and CDFs (``build_stable_quantized_cdf`` on the GPU)
    for ``codes`` ``[K, frames]``, stepping its ``LMModel`` frame by frame as its coder does."""
    from encodec.quantization.ac import build_stable_quantized_cdf

    k, frames = codes.shape
    states, offset, prev = None, 0, torch.zeros(1, k, 1, dtype=torch.long, device="cuda")
    probs, cdfs = [], []
    for t in range(frames):
        with torch.no_grad():
            probas, states, offset = lm(prev, states, offset)
        probs.append(probas[0, :, :, 0].T.cpu().numpy())
        cdfs.append(torch.stack([build_stable_quantized_cdf(probas[0, :, i, 0], 24, check=False) for i in range(k)]))
        prev = 1 + torch.from_numpy(codes[:, t : t + 1])[None].cuda()
    return np.stack(probs), torch.stack(cdfs).cpu().numpy()


def test_device_cdfs_are_metas_cuda_cdfs():
    from encodec.quantization.ac import build_stable_quantized_cdf

    from fastencodec.entropy.cdf import meta_cdfs_on_device

    gen = torch.Generator().manual_seed(0)
    pdf = torch.softmax(torch.randn(64, 1024, generator=gen) * 4, dim=1).cuda()
    want = torch.stack([build_stable_quantized_cdf(p, 24, check=False) for p in pdf])
    assert torch.equal(meta_cdfs_on_device(pdf, dim=1), want)
    assert torch.equal(meta_cdfs_on_device(pdf.T.contiguous(), dim=0).T, want)


@pytest.mark.parametrize("name, k, frames", [("encodec_24khz", 3, 300), ("encodec_48khz", 4, 160)])
def test_graphed_lm_matches_meta_on_cuda_bit_for_bit(name, k, frames):
    state = reference.meta_lm_state(name, seed=k)
    meta = reference.meta_lm(name).eval()
    meta.load_state_dict(state)
    meta.cuda()
    codes = np.random.default_rng(k).integers(0, 1024, (k, frames))
    want_probs, want_cdfs = meta_frames(meta, codes)
    ours = GraphedMetaLM(state, lm_config(name, state), "cuda")
    ours.reset(k)  # first stream: every window size runs eagerly
    got = np.stack([ours.step(None if t == 0 else codes[:, t - 1]) for t in range(frames)])
    np.testing.assert_array_equal(got, want_probs)
    ours.reset(k)  # second stream: each window size is captured, then replayed
    got = np.stack([ours.step_cdfs(None if t == 0 else codes[:, t - 1]) for t in range(frames)])
    assert ours.graphs >= min(frames, lm_config(name, state).past_context)
    np.testing.assert_array_equal(got, want_cdfs)
    segment = ours.segment_pass(k)  # the encoder's pass: frames enqueued back to back, replayed
    blocks = [segment.cdfs(codes[:, a:b]) for a, b in ((0, 1), (1, 100), (100, frames))]
    np.testing.assert_array_equal(np.concatenate(blocks).reshape(frames, k, -1), want_cdfs)


read_meta_header = reference.read_meta_header
our_decode = reference.decode_meta_lm_file
our_encode = reference.encode_meta_lm_file


@pytest.mark.parametrize("name, length", [("encodec_24khz", 12250), ("encodec_48khz", 96000)])
def test_meta_cuda_lm_files_decode_with_ours_on_cuda_and_back(meta_models, coders, name, length):
    model = meta_models[name]
    model.set_target_bandwidth(6.0)
    wav = reference.speech_like(model.sample_rate, model.channels, length / model.sample_rate, seed=length).cuda()
    data = meta_compress.compress(model, wav, use_lm=True)
    with torch.no_grad():
        expected = [(c[0].cpu().numpy(), None if s is None else float(s)) for c, s in model.encode(wav[None])]
    decoded = our_decode(data, coders[name], LAYOUTS[name])
    assert len(decoded) == len(expected)
    for (codes, scale), (want, want_scale) in zip(decoded, expected):
        np.testing.assert_array_equal(codes, want)
        assert scale == want_scale
    assert our_encode(name, length, expected, coders[name]) == data


def test_meta_on_cuda_reads_our_cuda_lm_file(meta_models, coders):
    """Random codes coded by ours on the GPU, read back by Meta's LM and arithmetic decoder there."""
    from encodec.quantization.ac import build_stable_quantized_cdf

    model = meta_models["encodec_24khz"]
    codes = np.random.default_rng(3).integers(0, 1024, (4, 40))
    data = our_encode("encodec_24khz", 40 * 320 - 7, [(codes, None)], coders["encodec_24khz"])
    lm = model.get_lm_model()
    fo = io.BytesIO(data)
    read_meta_header(fo)
    decoder = meta_compress.ArithmeticDecoder(fo)
    states, offset, prev = None, 0, torch.zeros(1, 4, 1, dtype=torch.long, device="cuda")
    for t in range(40):
        with torch.no_grad():
            probas, states, offset = lm(prev, states, offset)
        got = [decoder.pull(build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False)) for k in range(4)]
        assert got == codes[:, t].tolist()
        prev = 1 + torch.tensor(got, device="cuda")[None, :, None]


def test_file_api_lm_with_a_cuda_model(meta_models, torch_home, tmp_path):
    """``compress`` with a model on CUDA codes with Meta's LM on the CPU (no ``ld``: a CPU model
    and the CUDA one both read it); ``EcdcFile.write(device="cuda")`` codes with the LM on the GPU
    (``ld`` cuda): the CUDA model and Meta's ``decompress`` on CUDA read it, a CPU model refuses it."""
    import fastencodec
    from fastencodec.formats.files import read_ecdc

    model = meta_models["encodec_24khz"]
    checkpoint = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoint)
    codec = fastencodec.EnCodec.from_pretrained(str(checkpoint), device="cuda")
    cpu_codec = fastencodec.EnCodec.from_pretrained(str(checkpoint))
    audio = reference.speech_like(24000, 1, 0.5, seed=9).numpy()
    plain = fastencodec.compress(audio, model=codec, sample_rate=24000, bandwidth=3.0)
    coded = fastencodec.compress(audio, model=codec, sample_rate=24000, bandwidth=3.0, entropy="lm")
    file = read_ecdc(coded, codec)
    assert file.header.coder == "lm" and file.header.lm_device is None
    codes = file.segments[0][0]
    np.testing.assert_array_equal(codes, read_ecdc(plain, codec).segments[0][0])
    for reader in (codec, cpu_codec):
        want, _ = fastencodec.decompress(plain, model=reader)
        got, _ = fastencodec.decompress(coded, model=reader)
        np.testing.assert_array_equal(got, want)
    out = io.BytesIO()
    file.write(out, device="cuda")
    on_gpu = out.getvalue()
    assert read_ecdc(on_gpu, codec).header.lm_device == "cuda"
    np.testing.assert_array_equal(read_ecdc(on_gpu, codec).segments[0][0], codes)
    original = meta_compress.MODELS["encodec_24khz"]
    meta_compress.MODELS["encodec_24khz"] = lambda: model  # Meta's decompress would fetch published weights
    try:
        meta_wav, _ = meta_compress.decompress(on_gpu, device="cuda")
    finally:
        meta_compress.MODELS["encodec_24khz"] = original
    with torch.no_grad():
        meta_codes = torch.from_numpy(codes)[None].cuda()
        want_wav = model.decode([(meta_codes, None)])[0, :, : file.header.audio_length]
    torch.testing.assert_close(meta_wav, want_wav, rtol=0, atol=1e-5)  # the same codes: the same audio
    with pytest.raises(EcdcError, match="coded with Meta's LM on cuda"):
        fastencodec.decompress(on_gpu, model=cpu_codec)
