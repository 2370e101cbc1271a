"""GPU kernels (Triton, CUDA): accuracy per precision mode, batch invariance, independence from
PyTorch's TF32 flags, determinism. Skipped without CUDA and Triton; run on a GPU machine."""

import copy

import pytest
import torch

from fastencodec.kernels import Networks, triton_available
from tests import support as reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="needs CUDA and Triton"),
]


def limit(precision, network, unit):
    """Largest relative L2 error against float64 torch ops; ``unit`` is float32 torch ops' own error
    (cuDNN without TF32). The tf32 encoder computes in 3xTF32, near float32."""
    if precision == "exact" or (precision, network) == ("tf32", "encoder"):
        return (3 if precision == "exact" else 30) * unit
    if precision == "tf32":
        return 1e-2
    if precision == "fp16":  # an 11-bit significand: about 8 times bf16's rounding
        return 0.02 if network == "decoder" else 0.1
    return 0.1 if network == "decoder" else 0.5  # bf16 tokens of a random model: see BENCHMARKS.md


@pytest.fixture(scope="module", params=[24_000, 48_000, 32_000])
def model(request):
    return reference.fast_model(request.param).cuda()


def audio(model, batch, seconds=1.0, seed=0):
    cfg = model.config
    return torch.stack([reference.speech_like(cfg.sample_rate, cfg.channels, seconds, seed + i) for i in range(batch)])


def relative_error(out, ref):
    return float((out.double() - ref).norm() / ref.norm())


@pytest.mark.parametrize("precision", ["exact", "tf32", "fp16", "bf16"])
def test_networks_match_float64(model, precision):
    nets = Networks(model, precision)
    x = audio(model, 2).cuda()
    model64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        emb_ref = model64.encoder(x.double())
        unit = relative_error(model.encoder(x), emb_ref)
        assert relative_error(nets.encode(x), emb_ref) < limit(precision, "encoder", unit)
        audio_ref = model64.decoder(emb_ref)
        unit = relative_error(model.decoder(emb_ref.float()), audio_ref)
        assert relative_error(nets.decode(emb_ref.float()), audio_ref) < limit(precision, "decoder", unit)


@pytest.mark.parametrize("precision", ["exact", "tf32", "fp16", "bf16"])
def test_batch_invariance_bitwise(model, precision):
    """An item alone, in a batch of 64 random mates (eager, then replayed graph), in a batch of 7:
    bitwise equal embeddings, codes and audio."""
    nets = Networks(model, precision)
    n_q = min(8, model.quantizer.num_quantizers)
    x = audio(model, 64, seconds=0.5, seed=10).cuda()
    with torch.inference_mode():
        alone = nets.encode(x[5:6])
        outs = [nets.encode(x) for _ in range(3)]  # eager, capture, replay
        seven = nets.encode(x[:7])
        for out in outs:
            assert torch.equal(out[5:6], alone)
        assert torch.equal(seven[5:6], alone)
        codes = nets.quantize(outs[0], n_q)
        assert torch.equal(nets.quantize(alone, n_q), codes[5:6])
        emb = nets.dequantize(codes)
        audio_all = nets.decode(emb)
        assert torch.equal(nets.decode(emb[5:6]), audio_all[5:6])
        assert torch.equal(nets.decode(emb[:7])[5:6], audio_all[5:6])


def test_tokens_ignore_tf32_flags(model):
    nets = Networks(model, "exact")
    n_q = min(8, model.quantizer.num_quantizers)
    x = audio(model, 4).cuda()
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with torch.inference_mode():
        strict = nets.quantize(nets.encode(x), n_q)
        try:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            loose = nets.quantize(Networks(model, "exact").encode(x), n_q)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    assert torch.equal(strict, loose)


def test_codec_gpu_modes_batch_invariant(model):
    from fastencodec import EnCodec, RuntimePolicy

    for precision in ("exact", "fp16", "bf16"):
        codec = EnCodec(model, policy=RuntimePolicy(precision=precision))
        x = audio(model, 5)
        tokens = codec.encode(x)
        assert tokens.precision == precision
        alone = codec.encode(x[2:3])
        assert torch.equal(torch.as_tensor(alone.codes), torch.as_tensor(tokens.codes)[2:3])


def test_group_norm_kernel_matches_torch_and_ignores_the_batch():
    from torch.nn import functional as F

    from fastencodec.kernels import cuda

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(1, 32).cuda()
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    net = cuda.CudaNetwork([], "exact", "encoder")
    y = torch.randn(6, 3 * cuda.NORM_CHUNK // 32 + 5, 32, device="cuda") * 3 + 1.5
    res = torch.randn_like(y)
    with torch.inference_mode():
        out = net._group_norm(norm, y, res)
        ref = F.group_norm(y.double().transpose(1, 2), 1, norm.weight.double(), norm.bias.double(), norm.eps)
        assert relative_error(out, ref.transpose(1, 2) + res.double()) < 1e-6
        assert torch.equal(net._group_norm(norm, y[4:5].contiguous(), res[4:5].contiguous()), out[4:5])


def test_graphs_of_several_shapes_share_one_pool_and_replay_in_any_order():
    """One cache's graphs share one memory pool (their activations reuse the same memory), and
    replaying them in any order gives the eager values of each shape."""
    from fastencodec.kernels.cuda import GraphCache

    weight = torch.randn(256, 256, device="cuda")

    def fn(x):  # activations larger than the output, as in a network
        h = x
        for _ in range(4):
            h = torch.tanh(h @ weight)
        return h.sum(-1)

    inputs = {n: torch.randn(n, 1024, 256, device="cuda") for n in (5, 3, 4)}
    expected = {n: fn(x) for n, x in inputs.items()}
    cache = GraphCache(fn)
    with torch.inference_mode():
        for n in (5, 5, 3, 3, 4, 4):  # each shape: eager, then captured
            assert torch.equal(cache(inputs[n]), expected[n])
        assert len(cache._graphs) == 3 and len({graph.pool() for graph, _, _ in cache._graphs.values()}) == 1
        for n in (3, 5, 4, 4, 3, 5):
            assert torch.equal(cache(inputs[n]), expected[n])


@pytest.mark.parametrize(("prec", "blocks"), [("ieee", None), ("ieee", (64, 64, 4)), ("tf32x3", None)])
@pytest.mark.parametrize("n_q", [1, 8, 32])
def test_residual_codes_kernel_matches_float64_and_ignores_other_rows(prec, blocks, n_q):
    """In each products' precision a mode's codebook search uses (``CODE_PRECISION``): IEEE float32 in
    :mod:`~fastencodec.kernels.rvq_search`'s kernel (``blocks`` None, where it fits) and in Triton's,
    3xTF32 in Triton's; 3,000 rows (the last block partly empty), rows alone as in the batch."""
    from fastencodec.kernels import rvq_search
    from fastencodec.kernels.cuda import CODE_PRECISION, residual_codes

    assert prec in CODE_PRECISION.values()
    if prec == "ieee" and blocks is None and torch.cuda.get_device_capability()[0] == 9:
        assert rvq_search.fits(torch.device("cuda"), 128, 1024)  # the CUDA kernel runs on Hopper
    torch.manual_seed(0)
    embed = torch.randn(n_q, 1024, 128, device="cuda")
    x = torch.randn(3000, 128, device="cuda") * 3
    codes = residual_codes(x, embed, embed.pow(2).sum(-1), prec, blocks)
    residual, expected = x.double(), []
    for book in embed.double():
        index = (2 * residual @ book.t() - book.pow(2).sum(-1)[None]).argmax(1)
        expected.append(index)
        residual = residual - book[index]
    assert (codes == torch.stack(expected, 1)).double().mean() > 0.999
    for row in (0, 1234, 2999):
        alone = residual_codes(x[row : row + 1].contiguous(), embed, embed.pow(2).sum(-1), prec, blocks)
        assert torch.equal(alone, codes[row : row + 1]), row
    assert torch.equal(residual_codes(x, embed, embed.pow(2).sum(-1), prec, blocks), codes)  # run to run


@pytest.mark.parametrize("blocks", [None, (64, 64, 4)])
def test_residual_codes_take_the_lowest_of_tied_codes(blocks):
    """Code 700 a copy of code 5 (exactly tied distances): every row near them gets 5, in IEEE float32
    through either kernel."""
    from fastencodec.kernels.cuda import residual_codes

    torch.manual_seed(3)
    embed = torch.randn(2, 1024, 128, device="cuda")
    embed[0, 700] = embed[0, 5]
    x = embed[0, 5][None] + 0.01 * torch.randn(300, 128, device="cuda")
    codes = residual_codes(x, embed, embed.pow(2).sum(-1), "ieee", blocks)
    assert (codes[:, 0] == 5).all()


@pytest.mark.parametrize("precision", ["exact", "tf32", "fp16"])
def test_lstm_tiles_leave_results_bitwise_alike(precision, monkeypatch):
    """The LSTM kernel's tiles (chosen by the batch) change which program computes an output and how
    its loads are chunked and scheduled, never its sum: outputs bitwise the same with every tile of
    the table, the default, and other pipelining depths."""
    from fastencodec.kernels import cuda
    from fastencodec.kernels.plan import LSTMStep
    from fastencodec.nn.layers import LSTM

    monkeypatch.setattr(cuda.cluster_lstm, "fits", lambda width, device, dtype: False)  # the Triton kernel's tiles
    torch.manual_seed(0)
    module = LSTM(512, 2).cuda().eval()
    net = cuda.CudaNetwork([LSTMStep(module)], precision, "decoder")
    x = torch.randn(20, 97, 512, device="cuda").to(net.dtype)
    tiles = {cuda.LSTM_DEFAULT, *(t for pair in cuda.LSTM_TILES.values() for t in pair)}
    tiles |= {cuda.LSTM_DEFAULT._replace(stages=depth) for depth in (2, 8)}
    with torch.inference_mode():
        chosen = net._lstm(net.steps[0], x)  # 20 items: the tiles of more than one block
        assert torch.equal(net._lstm(net.steps[0], x[3:4].contiguous()), chosen[3:4])  # one item: the others
        for tile in sorted(tiles):
            monkeypatch.setattr(cuda, "lstm_tiles", lambda kind, batch, width, tile=tile: tile)
            assert torch.equal(net._lstm(net.steps[0], x), chosen), tile
