"""Ragged batches: items of unequal lengths sharing one batch on CUDA (Triton), each item's codes
and audio bitwise those it gets alone.

CPU: the bucket rule, the per-step length arithmetic against the torch modules, the policy knob,
and (slow, needs Triton) the kernels' per-item padding run through Triton's interpreter.
GPU (skipped without CUDA and Triton): the public API on the 24 and 32 kHz models in every mode.
"""


import numpy as np
import pytest
import torch

from fastencodec import EnCodec, RuntimePolicy
from fastencodec.engine.planner import bucket_edge
from fastencodec.kernels import triton_available
from fastencodec.kernels.plan import flatten, ragged_steps, step_lengths
from fastencodec.nn.config import EncodecConfig
from fastencodec.nn.layers import Conv1d
from fastencodec.nn.model import EncodecModel
from tests import support


def small_model(causal: bool, ratios: list[int], seed: int = 0) -> EncodecModel:
    """A random 24 kHz-rate model with few, short strides (hop ``prod(ratios)``): causal like the
    24 kHz model, or centred like the 32 kHz one; an LSTM 64 wide (the kernels' smallest)."""
    hf = support.HF_32KHZ | support.TINY
    hf |= {"use_causal_conv": causal, "upsampling_ratios": ratios, "num_filters": 64 // 2 ** len(ratios)}
    hf |= {"codebook_dim": 16, "sampling_rate": 24_000, "target_bandwidths": [120.0]}
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig.from_hf(hf)).eval().requires_grad_(False)


# -- CPU ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_octave", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("quantum", [1, 320])
def test_bucket_edges_depend_on_length_alone_and_bound_the_waste(per_octave, quantum):
    edges = [bucket_edge(n, per_octave, quantum) for n in range(1, 20_000, 7)]
    for n, edge in zip(range(1, 20_000, 7), edges):
        assert edge % quantum == 0 and n <= edge < n + n / per_octave + quantum
    assert edges == sorted(edges)  # monotone: a bucket is an interval of lengths
    # per octave (in units of ``quantum``) at most ``per_octave`` distinct edges
    octave = range(1024 * quantum + 1, 2048 * quantum + 1)
    assert len({bucket_edge(n, per_octave, quantum) for n in octave}) <= per_octave


@pytest.mark.parametrize("value", [3, -1, 1.0, "8"])
def test_policy_rejects_bad_bucket_counts(value):
    with pytest.raises(ValueError, match="buckets_per_octave"):
        RuntimePolicy(buckets_per_octave=value)


@pytest.mark.parametrize(("causal", "ratios"), [(True, [4, 2]), (False, [3, 2]), (False, [5, 4])])
def test_step_lengths_follow_the_modules(causal, ratios):
    """The per-step lengths the kernels are given are the lengths the torch modules produce, and
    ``None`` exactly when a reflect-padded conv of the reference sees an input no longer than its pad."""
    model = small_model(causal, ratios)
    seen: list[tuple[Conv1d, int]] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0].shape[-1])))
        for m in model.modules()
        if isinstance(m, Conv1d)
    ]
    hop = model.config.hop_length
    cases = {"encoder": [1, 7, hop * 3 + 5, hop * 7 - 1, hop * 7, hop * 7 + 1, 997], "decoder": [1, 6, 7, 9, 40]}
    try:
        for part, lengths in cases.items():
            network = getattr(model, part)
            steps = flatten(network.layers)
            assert ragged_steps(steps)
            for n in lengths:
                seen.clear()
                channels = model.config.channels if part == "encoder" else model.config.dimension
                with torch.inference_mode():
                    out = network(torch.randn(1, channels, n))
                table = step_lengths(steps, n)
                short = any(m.pad_mode == "reflect" and t <= max(m.padding(t)) for m, t in seen)
                assert (table is None) == short, (part, n)
                if table is not None:
                    assert table[-1] == out.shape[-1]
                    assert table[-1] == (-(-n // hop) if part == "encoder" else n * hop)
    finally:
        for hook in hooks:
            hook.remove()


def test_group_norm_models_do_not_batch_ragged():
    from fastencodec.nn.config import META_48KHZ

    model = EncodecModel(META_48KHZ).eval()
    assert not ragged_steps(flatten(model.encoder.layers))
    assert not EnCodec(model).engine.ragged(48_000)


def interpreted_check() -> None:
    """Under ``TRITON_INTERPRET=1`` (CPU tensors): ragged batches through the CUDA kernels, for a
    causal and a centred model (whose transposed convs read one frame past an item's end), equal
    each item run alone, bitwise, for the encoder and the decoder."""
    from fastencodec.kernels.cuda import CudaNetwork

    for causal, ratios in ((True, [4, 2]), (False, [3, 2])):
        model = small_model(causal, ratios)
        hop = model.config.hop_length
        samples = [8 * hop + 1, 9 * hop - 1, 13 * hop]
        for part, lengths in (("encoder", samples), ("decoder", [-(-n // hop) for n in samples])):
            steps = flatten(getattr(model, part).layers)
            net = CudaNetwork(steps, "exact", part)
            channels = model.config.channels if part == "encoder" else model.config.dimension
            torch.manual_seed(1)
            x = torch.randn(len(lengths), channels, max(lengths) + 3)
            for row, n in zip(x, lengths):
                row[:, n:] = 1e3  # what lies past an item's end must not matter
            table = torch.tensor([step_lengths(steps, n) for n in lengths], dtype=torch.int32).t().contiguous()
            with torch.inference_mode():
                out = net(x, table)
                for i in (0, 2):
                    alone = net(x[i : i + 1, :, : lengths[i]].contiguous())
                    assert alone.shape[-1] == table[-1, i]
                    assert torch.equal(out[i : i + 1, :, : alone.shape[-1]], alone), (causal, part, i)
    interpreted_codec_check()


def interpreted_codec_check() -> None:
    """Under ``TRITON_INTERPRET=1``: the public API on CPU tensors with the CUDA kernels forced on
    (graphs off): ``encode`` of a list of mixed lengths forms a ragged batch, and each item's codes
    and decoded audio equal those of the item alone."""
    from fastencodec.kernels import Networks
    from fastencodec.kernels.cuda import GraphCache

    Networks._uses_kernels = lambda self: True  # this process only (a subprocess of the test)
    GraphCache.__call__ = lambda self, *inputs: self.fn(*inputs)
    codec = EnCodec(small_model(False, [4, 2]))
    hop = codec.hop_length
    items = [torch.randn(1, n).numpy() for n in (33 * hop - 3, 35 * hop + 1, 36 * hop, 35 * hop - 1)]
    calls = []
    for name, at in (("encode_batch", 2), ("decode_batch", 3)):  # where ``lengths`` comes
        method = getattr(codec.engine, name)

        def spy(*args, method=method, name=name, at=at, **kwargs):
            calls.append((name, len(args[0]), (args[at:] or [kwargs.get("lengths")])[0] is not None))
            return method(*args, **kwargs)

        setattr(codec.engine, name, spy)
    tokens = codec.encode(items)
    audio = codec.decode(tokens)
    assert ("encode_batch", 4, True) in calls and ("decode_batch", 4, True) in calls, calls
    for i, item in enumerate(items):
        alone = codec.encode([item])
        frames = alone.codes.shape[-1]
        assert np.array_equal(tokens.codes[i, :, :frames], alone.codes[0]), i
        assert np.array_equal(audio[i], codec.decode(alone)[0]), i


@pytest.mark.slow
def test_ragged_kernels_under_the_triton_interpreter():
    pytest.importorskip("triton")
    support.run_under_triton_interpreter("tests.test_ragged")


@pytest.mark.slow
def test_ragged_kernels_compile_for_hopper_without_a_gpu():
    """The ragged variants of the conv kernels (one with a residual block's shortcut computed in the
    kernel) compile to sm_90 code (no GPU needed)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastencodec.kernels import triton_ops as ops

    lengths = {"t_in": "i32", "t_out": "i32", "c_in": "i32", "c_out": "i32", "lens": "*i32"}
    cases = [
        (ops.conv1d_kernel, ["x", "w", "bias", "res", "y"], {"pad_left": "i32"},
         {"K": 7, "STRIDE": 2, "DIL": 1, "REFLECT": True, "ELU": True, "ADD": True, "BT": 64,
          "sx": None, "sw": None, "sbias": None, "s_in": 0, "SHORTCUT": False}),
        (ops.conv1d_kernel, ["x", "w", "bias", "res", "y", "sx", "sw", "sbias"], {"pad_left": "i32", "s_in": "i32"},
         {"K": 1, "STRIDE": 1, "DIL": 1, "REFLECT": False, "ELU": True, "ADD": False, "BT": 64, "SHORTCUT": True}),
        (ops.conv_transpose1d_kernel, ["x", "w", "bias", "y"], {"trim_left": "i32"},
         {"K": 8, "STRIDE": 4, "ELU": True, "BQ": 64}),
    ]  # fmt: skip
    for kernel, pointers, more, constants in cases:
        constants = constants | {"PREC": "ieee", "BCO": 32, "BCI": 32, "OUTS": 0, "RAGGED": True, "ELU_OUT": True}
        signature = dict.fromkeys(pointers, "*fp32") | lengths | more | dict.fromkeys(constants, "constexpr")
        compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", 90, 32),
                                  options=ops.COMPILE)  # fmt: skip
        assert ".entry" in compiled.asm["ptx"]


# -- GPU ----------------------------------------------------------------------------------------


def lengths_for(hop: int) -> list[int]:
    """Odd lengths, lengths just above and below frame multiples, a very short item (coded on its
    own: the reference zero-extends it before reflecting) and several sharing length buckets."""
    base = 150 * hop
    near = [base, base + 1, base - 1, base + hop, base - hop - 1, 141 * hop + 1, 157 * hop - 3]
    return [*near, 777, 8 * hop + 1, 33_333]


@pytest.fixture(scope="module", params=[24_000, 32_000])
def gpu_model(request):
    if not (torch.cuda.is_available() and triton_available()):
        pytest.skip("needs CUDA and Triton")
    return support.fast_model(request.param).cuda()


@pytest.mark.parametrize("precision", ["exact", "tf32", "fp16", "bf16"])
@pytest.mark.gpu
def test_mixed_lengths_code_as_alone(gpu_model, precision, monkeypatch):
    codec = EnCodec(gpu_model, policy=RuntimePolicy(precision=precision))
    cfg = gpu_model.config
    items = [support.speech_like(cfg.sample_rate, cfg.channels, n / cfg.sample_rate, seed=i)[:, :n].numpy()
             for i, n in enumerate(lengths_for(cfg.hop_length))]  # fmt: skip
    ragged = {"encode": 0, "decode": 0}
    engine = codec.engine
    encode_batch, decode_batch = engine.encode_batch, engine.decode_batch

    def counting_encode(x, n_q, lengths=None):
        ragged["encode"] += lengths is not None
        return encode_batch(x, n_q, lengths)

    def counting_decode(codes, scales, device="cpu", lengths=None):
        ragged["decode"] += lengths is not None
        return decode_batch(codes, scales, device, lengths)

    monkeypatch.setattr(engine, "encode_batch", counting_encode)
    monkeypatch.setattr(engine, "decode_batch", counting_decode)
    runs = [codec.encode(items) for _ in range(3)]  # eager, graph capture, replay
    assert ragged["encode"] >= 3  # at least one bucket of several lengths per call
    audio = [codec.decode(tokens) for tokens in runs[:2]]
    assert ragged["decode"] >= 2
    for i, item in enumerate(items):
        alone = codec.encode([item])
        frames = alone.codes.shape[-1]
        for tokens in runs:
            assert np.array_equal(tokens.codes[i, :, :frames], alone.codes[0]), (precision, i, len(item))
            assert (tokens.codes[i, :, frames:] == -1).all()
        alone_audio = codec.decode(alone)[0]
        for out in audio:
            assert np.array_equal(out[i], alone_audio), (precision, i, len(item))


@pytest.mark.gpu
def test_ragged_off_batches_equal_lengths_only(gpu_model):
    codec = EnCodec(gpu_model, policy=RuntimePolicy(buckets_per_octave=0))
    assert not codec.engine.ragged(48_000)
    on = EnCodec(gpu_model)
    assert on.engine.ragged(48_000) and not on.engine.ragged(777)
    cfg = gpu_model.config
    items = [support.speech_like(cfg.sample_rate, cfg.channels, 1.0, seed=i)[:, : 20_000 + i].numpy() for i in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(codec.encode(items).codes, on.encode(items).codes))
