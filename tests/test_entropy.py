"""Entropy coding (fastencodec.entropy): Meta's LM mode against Meta's encodec, and the portable mode."""

import importlib
import io
import json
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from encodec import binary as meta_binary
from encodec.model import LMModel
from encodec.quantization.ac import ArithmeticCoder, build_stable_quantized_cdf

from fastencodec.entropy import (
    ArithmeticDecoder,
    ArithmeticEncoder,
    MetaLM,
    MetaLMCoder,
    MissingLMWeights,
    integer_cdfs,
    lm_checkpoint_path,
    lm_config,
    load_lm_state,
    meta_cdfs,
)
from fastencodec.formats.coders import BitsCoder
from fastencodec.formats.ecdc import EcdcError, EcdcReader, EcdcWriter
from tests import support as reference

meta_compress = importlib.import_module("encodec.compress")

LAYOUTS = reference.LM_LAYOUTS


@pytest.fixture(scope="module")
def coders(torch_home, one_thread):
    return {name: MetaLMCoder.for_model(name) for name in LAYOUTS}


@pytest.fixture(scope="module")
def meta_models(one_thread):
    """Meta's 24 and 48 kHz models with random weights and random codebooks (cheap to build)."""
    models = {}
    for seed, name in enumerate(LAYOUTS):
        rate, channels = (24000, 1) if name == "encodec_24khz" else (48000, 2)
        audio = reference.speech_like(rate, channels, 0.2, seed=seed)
        models[name] = reference.meta_codec_for_entropy(name, seed, audio)
    return models


def meta_model(models, name, bandwidth):
    model = models[name]
    model.set_target_bandwidth(bandwidth)
    return model


read_meta_header = reference.read_meta_header
our_decode = reference.decode_meta_lm_file
our_encode = reference.encode_meta_lm_file


CASES = [
    ("encodec_24khz", 6.0, 12000),  # whole frames (0.5 s)
    ("encodec_24khz", 6.0, 12250),  # not whole frames
    ("encodec_48khz", 6.0, 96000),  # three segments, the last 960 samples
]


@pytest.mark.parametrize("name, bandwidth, length", CASES)
def test_meta_lm_files_both_ways(meta_models, coders, name, bandwidth, length):
    model = meta_model(meta_models, name, bandwidth)
    wav = reference.speech_like(model.sample_rate, model.channels, length / model.sample_rate, seed=length)
    data = meta_compress.compress(model, wav, use_lm=True)
    with torch.no_grad():
        expected = [(codes[0].numpy(), None if s is None else float(s)) for codes, s in model.encode(wav[None])]
    decoded = our_decode(data, coders[name], LAYOUTS[name])
    assert len(decoded) == len(expected)
    for (codes, scale), (want, want_scale) in zip(decoded, expected):
        np.testing.assert_array_equal(codes, want)
        assert scale == pytest.approx(want_scale) if want_scale is not None else scale is None
    ours = our_encode(name, length, [(c, s) for c, s in expected], coders[name])
    assert ours == data
    plain = meta_compress.compress(model, wav, use_lm=False)
    assert len(ours) < len(plain) * 1.5  # random LM weights: sizes say nothing about real savings


def test_meta_decompress_reads_our_lm_file(meta_models, coders):
    model = meta_model(meta_models, "encodec_24khz", 1.5)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 1024, (2, 30))
    data = our_encode("encodec_24khz", 30 * 320 - 7, [(codes, None)], coders["encodec_24khz"])
    lm = model.get_lm_model()
    fo = io.BytesIO(data)
    read_meta_header(fo)
    decoder = meta_compress.ArithmeticDecoder(fo)
    states, offset, prev = None, 0, torch.zeros(1, 2, 1, dtype=torch.long)
    for t in range(30):
        with torch.no_grad():
            probas, states, offset = lm(prev, states, offset)
        got = [decoder.pull(build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False)) for k in range(2)]
        assert got == codes[:, t].tolist()
        prev = 1 + torch.tensor(got)[None, :, None]


@pytest.mark.slow
def test_lm_matches_meta_bit_for_bit_past_the_window(torch_home, one_thread):
    state = load_lm_state("encodec_24khz")
    meta = LMModel(32, 1024, num_layers=5, dim=200, past_context=262).eval()
    meta.load_state_dict(state)
    ours = MetaLM(state, lm_config("encodec_24khz", state))
    assert ours.cached
    ours.reset(3)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, (3, 300))
    states, offset, prev = None, 0, torch.zeros(1, 3, 1, dtype=torch.long)
    want = []
    for t in range(300):
        with torch.no_grad():
            probas, states, offset = meta(prev, states, offset)
        want.append(probas[0, :, :, 0].T.numpy())
        np.testing.assert_array_equal(ours.step(None if t == 0 else codes[:, t - 1]), want[-1])
        prev = torch.from_numpy(1 + codes[:, t : t + 1])[None]
    segment = ours.segment_pass(3)  # the encoder's causal pass, in blocks that cross the window's end
    assert segment is not None
    blocks = [segment.probabilities(codes[:, a:b]) for a, b in ((0, 1), (1, 5), (5, 260), (260, 300))]
    np.testing.assert_array_equal(np.concatenate(blocks), np.stack(want))


def test_graphed_lm_runs_metas_frame_ops_bit_for_bit(one_thread):
    """GraphedMetaLM's step (the operations its CUDA graphs capture), run eagerly on the CPU: Meta's
    probabilities and CDFs bit for bit, past the end of a short attention window (the GPU test,
    tests/test_entropy_lm_cuda.py, runs it captured on CUDA against Meta there)."""
    from encodec.quantization.ac import build_stable_quantized_cdf

    from fastencodec.entropy import LMConfig
    from fastencodec.entropy.graphed_lm import GraphedMetaLM

    torch.manual_seed(7)
    meta = LMModel(4, 1024, num_layers=5, dim=200, past_context=6).eval()
    ours = GraphedMetaLM(meta.state_dict(), LMConfig(num_codebooks=4, past_context=6), "cpu")
    codes = np.random.default_rng(7).integers(0, 1024, (3, 20))
    states, offset, prev = None, 0, torch.zeros(1, 3, 1, dtype=torch.long)
    ours.reset(3)
    want = []
    for t in range(20):
        with torch.no_grad():
            probas, states, offset = meta(prev, states, offset)
        cdfs = [build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False).numpy() for k in range(3)]
        want.append(np.stack(cdfs))
        previous = None if t == 0 else codes[:, t - 1]
        if t % 2:
            np.testing.assert_array_equal(ours.step(previous), probas[0, :, :, 0].T.numpy())
        else:
            np.testing.assert_array_equal(ours.step_cdfs(previous), want[-1])
        prev = torch.from_numpy(1 + codes[:, t : t + 1])[None]
    segment = ours.segment_pass(3)
    blocks = [segment.cdfs(codes[:, a:b]) for a, b in ((0, 1), (1, 9), (9, 20))]
    np.testing.assert_array_equal(np.concatenate(blocks), np.concatenate(want))
    assert ours.graphs == 0  # graphs are CUDA's


def test_graphed_lm_products_are_metas_shape_for_shape(one_thread):
    """The operations of GraphedMetaLM's frame step whose bits depend on the kernel a library picks
    (products, attention, norms, softmax) are Meta's, in order, with the same shapes, strides, dtypes
    and storage offsets: what lets its CUDA graphs replay the kernels Meta's module runs on a GPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fastencodec.entropy import LMConfig
    from fastencodec.entropy.graphed_lm import GraphedMetaLM

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in ("addmm", "mm", "bmm", "baddbmm", "native_layer_norm", "_softmax") or "attention" in name:
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                self.ops.append((name, [(a.shape, a.stride(), a.dtype, a.storage_offset()) for a in tensors]))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(8)
    meta = LMModel(4, 1024, num_layers=5, dim=200, past_context=6).eval()
    ours = GraphedMetaLM(meta.state_dict(), LMConfig(num_codebooks=4, past_context=6), "cpu")
    ours.reset(3)
    states, offset, prev = None, 0, torch.zeros(1, 3, 1, dtype=torch.long)
    for t in range(9):  # the last frames: a full window
        meta_ops, our_ops = Recorder(), Recorder()
        with torch.no_grad(), meta_ops:
            _, states, offset = meta(prev, states, offset)
        with our_ops:
            ours.step(None if t == 0 else prev[0, :, 0].numpy() - 1)
        assert len(meta_ops.ops) == 1 + 5 * 8 + 3 + 1
        assert our_ops.ops == meta_ops.ops
        prev = torch.randint(1, 1025, (1, 3, 1))


def test_integer_cdfs_are_the_exact_integer_rule():
    """Widths floor(w * free / total) + 2, the remainder to the first heaviest symbol: checked with
    Python integers on weights where a float quotient would round across an integer."""
    rng = np.random.default_rng(3)
    card = 1024
    free = 2**24 - 2 * card
    rows = [
        rng.integers(0, 2**37, card),
        np.full(card, 2**37 - 1),
        np.zeros(card, np.int64),
        np.r_[np.zeros(card - 1, np.int64), 5],
        rng.integers(0, 3, card),
        (rng.random(card) ** 40 * 2**30).astype(np.int64),
    ]
    for total in map(int, rng.integers(2**36, 2**37, 64) | 1):  # a quotient 1 / total below an integer
        near = (pow(total, -1, free) * total - 1) // free if total % 8191 else total  # free = 2**11 * 8191
        if near < total // 3:  # with a heavier weight beside it (the remainder would hide its error)
            rest = rng.multinomial(total - near - total // 2, np.full(card - 2, 1 / (card - 2)))
            rows.append(np.r_[near, total // 2, rest])
    # Quotients that float64 puts just below their integer (found by search).
    for total, low in ((115141888792, 28785472198), (132582307572, 33071228799), (3768285932, 832004042)):
        rest = rng.multinomial(total - low - total // 2, np.full(card - 2, 1 / (card - 2)))
        rows.append(np.r_[low, total // 2, rest])
    weights = np.stack(rows).astype(np.int64)
    got = integer_cdfs(weights)
    for row, cdf in zip(weights.tolist(), got.tolist()):
        s = sum(row)
        widths = [(w * free) // s + 2 if s else free // card + 2 for w in row]
        widths[row.index(max(row))] += 2**24 - sum(widths)
        assert cdf == np.cumsum(widths).tolist()


def test_cdfs_and_coder_match_meta():
    gen = torch.Generator().manual_seed(0)
    pdf = torch.softmax(torch.randn(200, 1024, generator=gen) * 4, dim=1)
    pdf[5] = torch.softmax(torch.randn(1024, generator=gen) * 40, dim=0)
    cdfs = meta_cdfs(pdf.numpy())
    for i in (0, 5, 199):
        np.testing.assert_array_equal(cdfs[i], build_stable_quantized_cdf(pdf[i], 24, check=False).numpy())
    symbols = torch.multinomial(pdf, 1, generator=gen)[:, 0].numpy()
    symbols[::17] = 1023
    fo = io.BytesIO()
    meta_coder = ArithmeticCoder(fo)
    for i, s in enumerate(symbols):
        meta_coder.push(int(s), torch.from_numpy(cdfs[i]))
    meta_coder.flush()
    out = io.BytesIO()
    ours = ArithmeticEncoder(out)
    ours.push(symbols[:50], cdfs[:50])
    ours.push(symbols[50:], cdfs[50:])
    ours.finish()
    assert out.getvalue() == fo.getvalue()


class Unseekable(io.RawIOBase):
    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def read(self, size=-1):
        return self._data.read(size)


@pytest.mark.parametrize("seekable", [True, False])
def test_decoder_reads_exactly_its_bytes(seekable):
    rng = np.random.default_rng(1)
    pdf = rng.dirichlet(np.ones(64) * 0.3, size=120).astype(np.float32)
    cdfs = meta_cdfs(pdf)
    symbols = np.array([rng.choice(64, p=p / p.sum()) for p in pdf.astype(np.float64)])
    out = io.BytesIO()
    enc = ArithmeticEncoder(out)
    enc.push(symbols, cdfs)
    enc.finish()
    data = out.getvalue() + b"NEXT"
    src = io.BytesIO(data) if seekable else Unseekable(data)
    dec = ArithmeticDecoder(src)
    np.testing.assert_array_equal(np.concatenate([dec.pull(cdfs[i : i + 9]) for i in range(0, 120, 9)]), symbols)
    dec.close()
    assert src.read() == b"NEXT"


def test_truncated_and_corrupt_lm_segments_raise_ecdc_error(coders):
    coder = coders["encodec_24khz"]
    codes = np.random.default_rng(2).integers(0, 1024, (2, 20))
    out = io.BytesIO()
    enc = coder.encoder(out, 2)
    enc.push(codes)
    enc.finish()
    data = out.getvalue()
    with pytest.raises(EcdcError, match="ended sooner"):
        coder.decoder(io.BytesIO(data[: len(data) // 2]), 2, 20).read(20)
    corrupt = bytes(b ^ 0xFF for b in data)
    try:
        decoded = coder.decoder(io.BytesIO(corrupt), 2, 20).read(20)
    except EcdcError:
        pass
    else:
        assert not np.array_equal(decoded, codes)


def test_missing_lm_weights_name_the_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    expected = tmp_path / "hub" / "checkpoints" / "encodec_lm_48khz-7add9fc3.th"
    assert lm_checkpoint_path("encodec_48khz") == expected
    with pytest.raises(MissingLMWeights) as info:
        load_lm_state("encodec_48khz")
    message = str(info.value)
    assert "encodec_lm_48khz-7add9fc3.th" in message and str(expected) in message
    assert "https://dl.fbaipublicfiles.com/encodec/v0/encodec_lm_48khz-7add9fc3.th" in message
    assert not expected.with_name(expected.name + ".partial").exists()
    with pytest.raises(MissingLMWeights, match="nowhere.th"):
        load_lm_state("encodec_24khz", tmp_path / "nowhere.th")
    with pytest.raises(ValueError, match="no entropy-coding LM"):
        lm_checkpoint_path("encodec_32khz")


def _offline(url, dst, *args, **kwargs):
    Path(dst).write_bytes(b"partial")
    raise OSError("network is unreachable")



# Portable mode ("lmp1").

GOLDEN = Path(__file__).parent / "data"


lcg_state = reference.lcg_lm_state
lcg_codes = reference.lcg_codes


@pytest.fixture(scope="module")
def portable():
    from fastencodec.entropy.portable import PortableCoder, PortableLM

    out = {}
    for name in LAYOUTS:
        state = lcg_state(name)
        out[name] = PortableCoder(PortableLM(state, lm_config(name, state)))
    return out


GOLDEN_CASES = [("encodec_24khz", 4, 60, 1), ("encodec_48khz", 4, 40, 2)]


def portable_segment(coder, codes) -> bytes:
    out = io.BytesIO()
    enc = coder.encoder(out, codes.shape[0])
    enc.push(codes[:, :7])
    enc.push(codes[:, 7:])
    enc.finish()
    return out.getvalue()


@pytest.mark.parametrize("name, k, frames, salt", GOLDEN_CASES)
def test_portable_golden_segments_decode_exactly(portable, name, k, frames, salt, monkeypatch):
    from fastencodec.entropy import portable as portable_module

    codes = lcg_codes(k, frames, salt)
    data = (GOLDEN / f"lmp1_{name}.bin").read_bytes()
    decoded = portable[name].decoder(io.BytesIO(data), k, frames)
    np.testing.assert_array_equal(np.concatenate([decoded.read(13), decoded.read(frames - 13)], axis=1), codes)
    assert portable_segment(portable[name], codes) == data
    # The decoder other devices use (the block pass stepped frame by frame), here on the CPU.
    coder = portable[name]
    monkeypatch.setattr(coder, "_stepper", lambda n, frames: portable_module._PassStep(
        portable_module.CausalPass(coder.pass_weights(), n)))
    decoded = coder.decoder(io.BytesIO(data), k, frames)
    np.testing.assert_array_equal(np.concatenate([decoded.read(13), decoded.read(frames - 13)], axis=1), codes)


def test_portable_encoders_match_the_decoding_kernel_past_the_window():
    """The encoders' LM passes (torch float64 products over blocks on any device; the CPU kernel
    stepped over known frames) give the decoding kernel's integers."""
    import dataclasses

    from fastencodec.entropy.fixed import CLAMP
    from fastencodec.entropy.portable import PortableLM
    from fastencodec.entropy.portable_kernel import KernelState, frame_cdfs
    from fastencodec.entropy.portable_pass import MAX_TERMS, CausalPass, PassWeights, product_bound

    assert product_bound(CLAMP) < 2**53 and MAX_TERMS >= 800  # every partial sum is an exact float64
    state = lcg_state("encodec_24khz")
    config = dataclasses.replace(lm_config("encodec_24khz", state), past_context=6)  # a window of 7 rows
    lm = PortableLM(state, config)
    codes = lcg_codes(3, 40, 7)
    want = lm.weights_for(codes)
    index = np.concatenate([np.zeros((3, 1), np.int64), codes[:, :-1] + 1], axis=1)
    blocks = ((0, 1), (1, 9), (9, 10), (10, 40))
    causal = CausalPass(PassWeights(lm), 3)
    got = [causal.weights_for(torch.from_numpy(index[:, a:b])).numpy() for a, b in blocks]
    np.testing.assert_array_equal(np.concatenate(got), want)
    # The CPU encoder's stepping over known frames, in pushes (the window compacted as it fills)
    # gives the kernel's CDFs.
    state = KernelState(config, 3)
    got = np.concatenate([frame_cdfs(lm.kernel, state, index[:, a:b]) for a, b in blocks])
    np.testing.assert_array_equal(got, integer_cdfs(want.reshape(-1, want.shape[-1])))


def test_portable_round_trip_past_a_short_window():
    """An lmp1 segment longer than the LM's window (here 7 rows), pushed in pieces that do not align
    with the encoder's 128-frame calls: the encoder's state compacts as it fills, the decoder's (sized
    for the segment) does not, and the codes come back; LM inputs of the wrong shape are refused."""
    import dataclasses

    from fastencodec.entropy.portable import PortableCoder, PortableLM
    from fastencodec.entropy.portable_kernel import KernelState, frame_cdfs

    state = lcg_state("encodec_24khz")
    config = dataclasses.replace(lm_config("encodec_24khz", state), past_context=6)
    lm = PortableLM(state, config)
    coder = PortableCoder(lm)
    codes = lcg_codes(3, 300, 11)
    out = io.BytesIO()
    encoder = coder.encoder(out, 3)
    for a, b in ((0, 1), (1, 141), (141, 300)):
        encoder.push(codes[:, a:b])
    encoder.finish()
    decoder = coder.decoder(io.BytesIO(out.getvalue()), 3, 300)
    np.testing.assert_array_equal(np.concatenate([decoder.read(13), decoder.read(287)], axis=1), codes)
    for bad in (np.zeros((2, 4), np.int64), np.zeros(3, np.int64), np.full((3, 2), 1026, np.int64)):
        with pytest.raises(ValueError, match="LM inputs"):
            frame_cdfs(lm.kernel, KernelState(config, 3), bad)


@pytest.mark.parametrize("isa", ["avx512bw", "avx2", "generic"])
def test_pair_products_are_exact_at_their_bounds(isa):
    """The decoding kernel's int32-lane matrix products (every instruction set this machine can run)
    give the int64 sums, with weights and activations at their extremes, over several chunks."""
    from numba import njit

    from fastencodec.entropy import pairdot
    from fastencodec.entropy.fixed import CLAMP

    if isa != "generic" and f"+{isa}" not in pairdot.compile_features().split(","):
        pytest.skip(f"numba does not compile for {isa} here")
    block, single = pairdot.make_products(isa, pairdot.BLOCK), pairdot.make_products(isa, 1)

    @njit
    def matvec(w, lo, hi, out):  # pairdot.matvec with this instruction set's products
        full = w.shape[0] - w.shape[0] % pairdot.BLOCK
        for group in range(0, full, pairdot.BLOCK):
            block(w, lo, hi, group, out)
        for group in range(full, w.shape[0]):
            single(w, lo, hi, group, out)

    rng = np.random.default_rng(3)
    n_out, n_in = 5 * pairdot.OUTPUTS + 3, 3 * pairdot.CHUNK + 10  # a partial block and a partial chunk
    top = np.full((n_out, n_in), 32767)
    cases = [(top, np.full(n_in, CLAMP)), (-top, np.full(n_in, CLAMP)), (top, np.full(n_in, -CLAMP)),
             (rng.integers(-32767, 32768, (n_out, n_in)), rng.integers(-CLAMP, CLAMP + 1, n_in))]
    for w, x in cases:
        lo, hi = np.empty(n_in, np.int16), np.empty(n_in, np.int16)
        pairdot.split(x.astype(np.int64), lo, hi)
        out = np.full(6 * pairdot.OUTPUTS, -1, np.int64)
        matvec(pairdot.paired(w.astype(np.int16)), lo, hi, out)
        np.testing.assert_array_equal(out[:n_out], w @ x)
        assert not out[n_out:].any()  # the padded outputs
    with pytest.raises(ValueError, match="isa must be one of"):
        pairdot.make_products("neon", 1)
    with pytest.raises(ValueError, match="even input count"):
        pairdot.paired(np.ones((2, 3), np.int16))


AVX_OFF_CHECK = """
import numpy as np
from fastencodec.entropy import pairdot
assert pairdot.target_isa() == "generic", pairdot.target_isa()
rng = np.random.default_rng(5)
w = rng.integers(-32767, 32768, (40, 132)).astype(np.int16)
x = rng.integers(-(2**20 - 1), 2**20, 132)
lo, hi, out = np.empty(132, np.int16), np.empty(132, np.int16), np.zeros(48, np.int64)
pairdot.split(x, lo, hi)
pairdot.matvec(pairdot.paired(w), lo, hi, out)
assert np.array_equal(out[:40], w.astype(np.int64) @ x)
"""


@pytest.mark.slow
def test_pair_products_follow_numbas_features_with_avx_off(tmp_path):
    """With ``NUMBA_ENABLE_AVX=0`` numba compiles without AVX: the products must use the generic
    code (an AVX-512 intrinsic there aborts LLVM, killing the process) and still be exact."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = os.environ | {"NUMBA_ENABLE_AVX": "0", "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", AVX_OFF_CHECK], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_attention_scores_are_exact_floor_quotients():
    """The kernel's division-free floor(score / (5 * 2**12)), at and around multiples of the divisor."""
    from fastencodec.entropy.portable_kernel import _scaled_scores

    rng = np.random.default_rng(5)
    k = rng.integers(-(2**44) // 20480, 2**44 // 20480, 20000)
    scores = np.concatenate([rng.integers(-25 * 2**40, 25 * 2**40, 20000), k * 20480 - 1, k * 20480, k * 20480 + 1,
                             k * 4096 - 1, k * 4096, np.arange(-50000, 50000)])
    row = scores.astype(np.float64)
    best = _scaled_scores(row, row.size)
    want = np.floor_divide(scores, 20480)
    np.testing.assert_array_equal(row.astype(np.int64), want)
    assert best == want.max()


def test_portable_round_trip_and_stream_position(portable):
    coder = portable["encodec_48khz"]
    segments = [lcg_codes(8, 150, 5), lcg_codes(8, 3, 6)]
    data = b"".join(portable_segment(coder, codes) for codes in segments) + b"END"
    src = io.BytesIO(data)
    for codes in segments:
        np.testing.assert_array_equal(coder.decoder(src, 8, codes.shape[1]).read(codes.shape[1]), codes)
    assert src.read() == b"END"


def test_portable_refuses_other_weights_and_damaged_segments(portable):
    from fastencodec.entropy.portable import PortableLM

    codes = lcg_codes(4, 30, 9)
    data = portable_segment(portable["encodec_24khz"], codes)
    other_state = lcg_state("encodec_24khz")
    other_state["linears.0.bias"] = other_state["linears.0.bias"] + 0.01
    other = PortableLM(other_state, lm_config("encodec_24khz", other_state))
    with pytest.raises(EcdcError, match="other LM weights"):
        type(portable["encodec_24khz"])(other).decoder(io.BytesIO(data), 4, 30)
    damaged = bytearray(data + b"NEXT")
    damaged[20] ^= 0x10
    src = io.BytesIO(bytes(damaged))
    with pytest.raises(EcdcError, match="CRC"):
        portable["encodec_24khz"].decoder(src, 4, 30)
    assert src.read() == b"NEXT"  # the next segment is still readable
    for cut in (5, 12, len(data) - 1):
        with pytest.raises(EcdcError, match="truncated"):
            portable["encodec_24khz"].decoder(io.BytesIO(data[:cut]), 4, 30)


def _fuzz_payload(coder, data, frames, k, flips):
    import zlib

    head, payload = data[:12], bytearray(data[12:])
    for pos, bit in flips:
        payload[pos % len(payload)] ^= 1 << bit
    fixed = head[:8] + struct.pack("!I", zlib.crc32(bytes(payload))) + bytes(payload)
    try:
        coder.decoder(io.BytesIO(fixed), k, frames).read(frames)
    except EcdcError:
        pass


def test_fuzzed_entropy_payloads_only_raise_ecdc_error(portable, coders):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    codes = lcg_codes(2, 12, 4)
    port = portable["encodec_24khz"]
    port_data = portable_segment(port, codes)
    meta_coder = coders["encodec_24khz"]
    out = io.BytesIO()
    enc = meta_coder.encoder(out, 2)
    enc.push(codes)
    enc.finish()
    meta_data = out.getvalue()
    flips = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1, max_size=4)

    @settings(max_examples=25, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(flips=flips, cut=st.integers(0, 64), junk=st.binary(max_size=8))
    def check(flips, cut, junk):
        _fuzz_payload(port, port_data, 12, 2, flips)
        raw = bytearray(meta_data)
        for pos, bit in flips:
            raw[pos % len(raw)] ^= 1 << bit
        try:
            meta_coder.decoder(io.BytesIO(bytes(raw[: max(1, len(raw) - cut)]) + junk), 2, 12).read(12)
        except EcdcError:
            pass

    check()


# The container hook: EcdcWriter/EcdcReader with a symbol coder.


def container_bytes(name, length, segments, coder, **extras):
    out = io.BytesIO()
    writer = EcdcWriter(
        out, model_name=name, num_codebooks=segments[0][0].shape[0], bits_per_codebook=10,
        normalize=LAYOUTS[name].normalize, audio_length=length, coder=coder, **extras,
    )
    for codes, scale in segments:
        writer.begin_segment(scale)
        writer.write_frames(codes[:, :5])
        writer.write_frames(codes[:, 5:])
        writer.end_segment()
    writer.finish()
    return out.getvalue()


def container_read(data, name, coder):
    reader = EcdcReader(io.BytesIO(data), coder=coder)
    return reader.header, list(reader.segments(LAYOUTS[name]))


class CodedOnCuda:
    """Our CPU ``lm`` coder, reporting that its LM ran on a CUDA GPU (what the header then records)."""

    tag = "lm"
    device_type = "cuda"

    def __init__(self, coder):
        self.encoder, self.decoder = coder.encoder, coder.decoder


def test_gpu_coded_lm_files_say_so_and_refuse_a_cpu_decode(coders, tmp_path, capsys, monkeypatch):
    from fastencodec import cli

    codes = np.random.default_rng(6).integers(0, 1024, (2, 30))
    cpu = coders["encodec_24khz"]
    assert cpu.device_type == "cpu"
    assert b'"ld"' not in container_bytes("encodec_24khz", 9600, [(codes, None)], cpu)  # Meta's header
    data = container_bytes("encodec_24khz", 9600, [(codes, None)], CodedOnCuda(cpu))
    assert read_meta_header(io.BytesIO(data)) == ("encodec_24khz", 9600, 2, True)  # Meta's reader: unchanged
    header, decoded = container_read(data, "encodec_24khz", CodedOnCuda(cpu))
    assert header.lm_device == "cuda"
    np.testing.assert_array_equal(decoded[0][0], codes)
    with pytest.raises(EcdcError, match=r"coded with Meta's LM on cuda.*device='cuda', --device cuda\), not on cpu"):
        container_read(data, "encodec_24khz", cpu)
    assert data.count(b'"cuda"') == 1
    with pytest.raises(EcdcError, match="metadata ld must be one of"):  # a damaged device kind
        container_read(data.replace(b'"cuda"', b'"cuea"'), "encodec_24khz", cpu)
    path = tmp_path / "gpu.ecdc"
    path.write_bytes(data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["info", str(path)]) == 1
    assert "coded with Meta's LM on a CUDA GPU; its codes decode (and check) only on one" in capsys.readouterr().err


def test_cpu_coded_lm_files_decode_on_the_cpu_whatever_the_model_device(coders):
    """A file without ``ld`` (Meta's, or ours coded on the CPU) is read with Meta's LM on the CPU
    even for a model on a GPU: no CUDA is needed here, since the reader never builds a GPU LM."""
    codes = np.random.default_rng(8).integers(0, 1024, (2, 30))
    data = container_bytes("encodec_24khz", 9600, [(codes, None)], coders["encodec_24khz"])
    for device in ("cuda", "cuda:1", torch.device("cuda", 0), "meta"):
        reader = EcdcReader(io.BytesIO(data))
        (decoded, _), = reader.segments(LAYOUTS["encodec_24khz"], device=device)
        np.testing.assert_array_equal(decoded, codes)


def test_container_writes_meta_lm_files_byte_for_byte(meta_models, coders):
    model = meta_model(meta_models, "encodec_48khz", 3.0)
    wav = reference.speech_like(48000, 2, 1.0, seed=4)
    data = meta_compress.compress(model, wav, use_lm=True)
    with torch.no_grad():
        segments = [(c[0].numpy(), float(s)) for c, s in model.encode(wav[None])]
    coder = coders["encodec_48khz"]
    assert container_bytes("encodec_48khz", wav.shape[-1], segments, coder, checksum=False) == data
    header, decoded = container_read(data, "encodec_48khz", coder)
    assert header.coder == "lm"
    for (codes, scale), (want, want_scale) in zip(decoded, segments):
        np.testing.assert_array_equal(codes, want)
        assert scale == want_scale
    with_crc = container_bytes("encodec_48khz", wav.shape[-1], segments, coder, source_sample_rate=44100)
    reread = container_read(with_crc, "encodec_48khz", coder)[1]
    assert len(reread) == len(decoded) and all(np.array_equal(a, b) for (a, _), (b, _) in zip(reread, decoded))
    damaged = bytearray(with_crc)
    damaged[-1] ^= 1  # the CRC trailer
    with pytest.raises(EcdcError, match="checksum"):
        container_read(bytes(damaged), "encodec_48khz", coder)
    with pytest.raises(EcdcError, match="coder 'lm', not the 'bits' given"):
        container_read(data, "encodec_48khz", BitsCoder(10))


def test_portable_container_golden_and_meta_refusal(portable):
    coder = portable["encodec_48khz"]
    segments = [(lcg_codes(2, 150, 1), 0.5), (lcg_codes(2, 150, 2), 0.25), (lcg_codes(2, 3, 3), 1.0)]
    data = container_bytes("encodec_48khz", 96000, segments, coder)
    golden = (GOLDEN / "lmp1_48khz.ecdc").read_bytes()
    assert data == golden
    header, decoded = container_read(golden, "encodec_48khz", coder)
    assert header.coder == "lmp1"
    for (codes, scale), (want, want_scale) in zip(decoded, segments):
        np.testing.assert_array_equal(codes, want)
        assert scale == want_scale
    with pytest.raises(ValueError, match="Version not supported"):
        meta_binary.read_ecdc_header(io.BytesIO(golden))
    with pytest.raises(EcdcError, match="coder 'lmp1', not the 'lm' given"):
        container_read(golden, "encodec_48khz", SimpleNamespace(tag="lm"))  # a coder for another mode


# The CLI hook: compress --lm / --entropy lmp1, decompress and info read them.


@pytest.mark.parametrize("mode", ["lm", "lmp1"])
def test_cli_entropy_modes_round_trip(meta_models, coders, tmp_path, capsys, mode):
    import soundfile as sf

    from fastencodec import cli

    model = meta_models["encodec_24khz"]
    checkpoint = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(model.state_dict(), checkpoint)
    wav = tmp_path / "in.wav"
    sf.write(wav, reference.speech_like(24000, 1, 0.4, seed=8).numpy()[0], 24000)
    plain, coded = tmp_path / "plain.ecdc", tmp_path / f"{mode}.ecdc"
    flag = ["--lm"] if mode == "lm" else ["--entropy", mode]
    assert cli.main(["compress", str(wav), str(plain), "--model", str(checkpoint), "-b", "3", "-q"]) == 0
    assert cli.main(["compress", str(wav), str(coded), "--model", str(checkpoint), "-b", "3", "-q", *flag]) == 0
    outputs = []
    for path in (plain, coded):
        out = tmp_path / (path.stem + ".wav")
        assert cli.main(["decompress", str(path), str(out), "--model", str(checkpoint), "-q"]) == 0
        outputs.append(sf.read(out)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    capsys.readouterr()
    assert cli.main(["info", str(coded), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["entropy"] == mode and facts["bytes"] == coded.stat().st_size
    payload = [p.stat().st_size - 9 - struct.unpack("!I", p.read_bytes()[5:9])[0] - 4 for p in (coded, plain)]
    assert facts["saving_vs_bits"] == pytest.approx(1 - payload[0] / payload[1])
    assert cli.main(["info", str(coded)]) == 0
    assert "vs plain bit packing" in capsys.readouterr().out


def test_cli_lm_beside_another_entropy_mode_is_a_usage_error(tmp_path, capsys):
    from fastencodec import cli

    wav = tmp_path / "in.wav"
    wav.write_bytes(b"never read")
    assert cli.main(["compress", str(wav), "--lm", "--entropy", "lmp1", "-q"]) == 2
    assert "--lm means --entropy lm; it contradicts --entropy lmp1" in capsys.readouterr().err
    assert not (tmp_path / "in.ecdc").exists()


def test_cli_loads_the_lm_once_for_many_files(meta_models, torch_home, tmp_path, monkeypatch):
    import soundfile as sf

    from fastencodec import cli
    from fastencodec.formats import coders as coder_registry

    checkpoint = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(meta_models["encodec_24khz"].state_dict(), checkpoint)
    built = []
    factory = coder_registry.CODERS["lmp1"]
    monkeypatch.setitem(coder_registry.CODERS, "lmp1", lambda *a: built.append(a) or factory(*a))
    wavs = [tmp_path / f"{i}.wav" for i in range(3)]
    for i, wav in enumerate(wavs):
        sf.write(wav, reference.speech_like(24000, 1, 0.2, seed=20 + i).numpy()[0], 24000)
    model = ["--model", str(checkpoint), "-q"]
    assert cli.main(["compress", *map(str, wavs), "--entropy", "lmp1", "-b", "3", *model]) == 0
    assert len(built) == 1
    assert cli.main(["decompress", *(str(w.with_suffix(".ecdc")) for w in wavs), *model]) == 0
    assert len(built) == 2 and all((tmp_path / f"{i}_decompressed.wav").is_file() for i in range(3))


def test_cli_info_reports_a_damaged_lmp1_segment(tmp_path, capsys):
    from fastencodec import cli

    weights = tmp_path / "lcg_lm.th"
    torch.save(lcg_state("encodec_48khz"), weights)
    golden = (GOLDEN / "lmp1_48khz.ecdc").read_bytes()
    damaged = bytearray(golden)
    damaged[segment_payload_offsets(golden)[1] + 3] ^= 0x40
    path = tmp_path / "damaged.ecdc"
    path.write_bytes(bytes(damaged))
    assert cli.main(["info", str(path), "--lm-weights", str(weights)]) == 1
    captured = capsys.readouterr()
    assert "damaged:       samples 47520 to 95520 (fail their CRC; decode as silence)" in captured.out
    assert captured.err.strip() == f"fastencodec: {path}: 1 damaged segment (they decode as silence)"
    assert cli.main(["info", str(path), "--lm-weights", str(weights), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["damaged_segments"] == [[47520, 48000]]
    (tmp_path / "clean.ecdc").write_bytes(golden)
    assert cli.main(["info", str(tmp_path / "clean.ecdc"), "--lm-weights", str(weights), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["damaged_segments"] == []


def test_cli_names_missing_lm_weights(tmp_path, monkeypatch, capsys):
    from fastencodec import cli

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    data = io.BytesIO()
    meta_binary.write_ecdc_header(data, {"m": "encodec_24khz", "al": 320, "nc": 2, "lm": True})
    path = tmp_path / "x.ecdc"
    path.write_bytes(data.getvalue() + bytes(8))
    assert cli.main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "encodec_lm_24khz-1608e3c0.th" in err and str(tmp_path / "hub" / "checkpoints") in err


# The file API: fastencodec.compress(..., entropy=, lm_weights=) and decompress read them.


@pytest.mark.parametrize("mode", ["lm", "lmp1"])
def test_file_api_entropy_modes(meta_models, coders, torch_home, tmp_path, mode):
    import fastencodec
    from fastencodec.formats.files import read_ecdc

    checkpoint = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(meta_models["encodec_24khz"].state_dict(), checkpoint)
    weights = tmp_path / "my_lm.th"
    weights.write_bytes((torch_home / "hub" / "checkpoints" / "encodec_lm_24khz-1608e3c0.th").read_bytes())
    codec = fastencodec.EnCodec.from_pretrained(str(checkpoint))
    audio = reference.speech_like(24000, 1, 0.3, seed=9).numpy()
    plain = fastencodec.compress(audio, model=codec, sample_rate=24000, bandwidth=3.0)
    coded = fastencodec.compress(audio, model=codec, sample_rate=24000, bandwidth=3.0, entropy=mode, lm_weights=weights)
    assert coded[4] == (1 if mode == "lmp1" else 0)  # the version byte: Meta's reader refuses lmp1
    file = read_ecdc(coded, codec, lm_weights=weights)
    assert file.header.coder == mode
    np.testing.assert_array_equal(file.segments[0][0], read_ecdc(plain, codec).segments[0][0])
    out = io.BytesIO()
    file.write(out, lm_weights=weights)
    assert out.getvalue() == coded
    want, rate = fastencodec.decompress(plain, model=codec)
    got, _ = fastencodec.decompress(coded, model=codec, lm_weights=weights)
    np.testing.assert_array_equal(got, want)
    assert rate == 24000
    with pytest.raises(ValueError, match="unknown entropy mode 'zip'"):
        fastencodec.compress(audio, model=codec, sample_rate=24000, entropy="zip")
    with pytest.raises(MissingLMWeights, match="not found"):
        fastencodec.decompress(coded, model=codec, lm_weights=tmp_path / "missing.th")


def test_codec_import_path_does_not_load_numba():
    import subprocess
    import sys

    code = "import sys, fastencodec, fastencodec.cli; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# A damaged lmp1 segment: reported with a warning, decoded as silence; the other segments survive.


def segment_payload_offsets(data):
    """Byte offsets of each lmp1 payload in a normalizing (48 kHz) file written by fastencodec."""
    position = 9 + struct.unpack("!I", data[5:9])[0]
    offsets = []
    while position + 16 < len(data) - 4:
        size = struct.unpack("!I", data[position + 8 : position + 12])[0]
        offsets.append(position + 16)
        position += 16 + size
    return offsets


def test_reader_continues_past_a_damaged_lmp1_segment(portable):
    from fastencodec import DamagedSegmentWarning

    coder = portable["encodec_48khz"]
    golden = (GOLDEN / "lmp1_48khz.ecdc").read_bytes()
    offsets = segment_payload_offsets(golden)
    assert len(offsets) == 3
    damaged = bytearray(golden)
    damaged[offsets[1] + 3] ^= 0x40
    reader = EcdcReader(io.BytesIO(bytes(damaged)), coder=coder)
    with pytest.warns(DamagedSegmentWarning, match=r"segment 1 \(samples 47520 to 95520\).*CRC"):
        chunks = list(reader.chunks(LAYOUTS["encodec_48khz"]))
    assert reader.damaged == [1]
    assert [c.damaged for c in chunks] == [False, True, False]
    clean = list(EcdcReader(io.BytesIO(golden), coder=coder).chunks(LAYOUTS["encodec_48khz"]))
    for index in (0, 2):
        np.testing.assert_array_equal(chunks[index].codes, clean[index].codes)
    assert not chunks[1].codes.any() and chunks[1].scale == clean[1].scale
    damaged[offsets[1] - 12] ^= 1  # the fingerprint of that segment: not a damaged payload, an error
    with pytest.raises(EcdcError, match="other LM weights"):
        list(EcdcReader(io.BytesIO(bytes(damaged)), coder=coder).chunks(LAYOUTS["encodec_48khz"]))


def test_decompress_silences_a_damaged_lmp1_segment(codec48, torch_home):
    import warnings

    import fastencodec

    audio = reference.speech_like(48000, 2, 2.0, seed=5).numpy()  # 3 segments, the last 960 samples
    data = fastencodec.compress(audio, model=codec48, sample_rate=48000, bandwidth=3.0, entropy="lmp1")
    clean, _ = fastencodec.decompress(data, model=codec48)
    damaged = bytearray(data)
    damaged[segment_payload_offsets(data)[1] + 1] ^= 0x08
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audio_out, rate = fastencodec.decompress(bytes(damaged), model=codec48)
    assert [w.category for w in caught] == [fastencodec.DamagedSegmentWarning]
    assert rate == 48000 and audio_out.shape == clean.shape
    assert not audio_out[:, 47520:95520].any()
    np.testing.assert_array_equal(audio_out[:, :47520], clean[:, :47520])
    np.testing.assert_array_equal(audio_out[:, 95520:], clean[:, 95520:])
    assert np.abs(clean[:, 47520:95520]).max() > 0
