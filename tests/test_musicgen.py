"""MusicGen (issue 16): tiny random-weight transformers checkpoints, generated with ours and theirs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from fastencodec.musicgen import MusicGen  # noqa: E402

WORDS = "jazz piano rock drums calm ambient synth bass guitar violin fast slow loud soft happy sad".split()


def _tokenizer(path):
    """A T5-style word-level tokenizer (pad 0, </s> 1 appended, unk 2), saved as tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(str(path / "tokenizer.json"))
    return tok


def _build(path, stereo=False):
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    t5 = T5Config(
        vocab_size=len(WORDS) + 3, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="relu",
    )
    codec = EncodecConfig(
        sampling_rate=32000, audio_channels=1, hidden_size=16, num_filters=4, num_residual_layers=1,
        upsampling_ratios=[8, 4], codebook_size=64, target_bandwidths=[24.0], num_lstm_layers=1,
        use_causal_conv=False, chunk_length_s=None, overlap=None,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        num_codebooks=8 if stereo else 4, audio_channels=2 if stereo else 1, max_position_embeddings=64,
        pad_token_id=64, bos_token_id=64, decoder_start_token_id=64,
    )
    torch.manual_seed(3 if stereo else 2)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=decoder))
    with torch.no_grad():  # larger random weights than the default init, so logits are far from ties
        for name, p in model.decoder.named_parameters():
            if "layer_norm" not in name:
                p.normal_(0, 0.3)
    model.eval().save_pretrained(path)
    tok = _tokenizer(path)
    return model, tok


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    path = tmp_path_factory.mktemp("musicgen-mono")
    model, tok = _build(path)
    return model, tok, path, MusicGen.from_pretrained(path, "cpu")


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    path = tmp_path_factory.mktemp("musicgen-stereo")
    model, tok = _build(path, stereo=True)
    return model, tok, path, MusicGen.from_pretrained(path, "cpu")


def _inputs(tok, prompts):
    rows = [tok.encode(p).ids for p in prompts]
    n = max(map(len, rows))
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask


def _theirs(model, tok, prompts, new_tokens, guidance, **kwargs):
    """transformers' codes [B, K, F], audio [B, C, S] and guided scores per step [B, K, V]."""
    captured = []
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kw):
        captured.append(codes.clone())
        return decode(codes, *args, **kw)

    model.audio_encoder.decode = spy
    try:
        extra = {}
        if prompts is not None:
            extra["input_ids"], extra["attention_mask"] = _inputs(tok, prompts)
        out = model.generate(
            **extra, **kwargs, do_sample=False, guidance_scale=guidance, max_new_tokens=new_tokens,
            output_scores=True, return_dict_in_generate=True,
        )
    finally:
        model.audio_encoder.decode = decode
    k = model.decoder.num_codebooks
    codes = captured[0][0] if len(captured) == 1 else torch.cat([c[0] for c in captured], dim=1)
    if len(captured) == 2:  # stereo: left and right decoded apart; re-interleave
        left, right = captured[0][0], captured[1][0]
        codes = torch.stack([left, right], dim=2).flatten(1, 2)
    scores = [s.view(-1, k, s.shape[-1]) for s in out.scores]
    return codes, out.sequences, scores


def _ours(mg, prompts, frames, guidance, **kwargs):
    steps = []
    tokens = mg.generate_tokens(
        prompts, frames / mg.frame_rate, guidance_scale=guidance, do_sample=False,
        logits_callback=lambda t, logits: steps.append(logits.clone()), **kwargs,
    )
    return tokens, mg.decode(tokens), steps


def _compare(theirs, ours):
    codes, audio, scores = theirs
    tokens, our_audio, steps = ours
    assert tokens.shape == codes.shape
    assert torch.equal(tokens, codes)
    assert len(steps) == len(scores)
    for a, b in zip(steps, scores):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()
    assert our_audio.shape == audio.shape
    peak = audio.abs().max()
    assert (our_audio - audio).abs().max() <= 1e-4 * peak


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_greedy_matches_transformers_batch_of_unequal_prompts(mono, guidance):
    model, tok, _, mg = mono
    prompts = ["jazz piano", "loud fast rock drums with bass and guitar", "calm"]
    frames = 12
    theirs = _theirs(model, tok, prompts, frames + 4 - 1, guidance)
    _compare(theirs, _ours(mg, prompts, frames, guidance))


def test_unconditional_matches_transformers(mono):
    model, tok, _, mg = mono
    frames = 10
    inputs = dict(model.get_unconditional_inputs(num_samples=2))
    theirs = _theirs(model, tok, None, frames + 3, inputs.pop("guidance_scale"), **inputs)
    _compare(theirs, _ours(mg, [None, None], frames, 3.0))


def test_stereo_matches_transformers(stereo):
    model, tok, _, mg = stereo
    assert mg.channels == 2 and mg.num_codebooks == 8
    prompts = ["ambient synth", "happy violin soft"]
    frames = 9
    theirs = _theirs(model, tok, prompts, frames + 4 - 1, 3.0)
    ours = _ours(mg, prompts, frames, 3.0)
    assert ours[1].shape[1] == 2
    _compare(theirs, ours)


def test_audio_prompt_continuation_matches_transformers(mono):
    model, tok, _, mg = mono
    t = np.arange(320) / 32000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)])[:, None].astype(np.float32)
    prompt_frames, new = 10, 12
    theirs = _theirs(model, tok, ["jazz", "rock drums"], new, 3.0, input_values=torch.from_numpy(audio))
    frames = prompt_frames + 1 + new - 4
    ours = _ours(mg, ["jazz", "rock drums"], frames, 3.0, audio_prompt=audio)
    assert torch.equal(ours[0][:, :, :prompt_frames], mg.encode_prompt(audio))
    _compare(theirs, ours)


def test_seeded_sampling_is_reproducible(mono):
    *_, mg = mono
    state = torch.random.get_rng_state()
    kwargs = dict(top_k=20, top_p=0.9, temperature=1.2)
    a, tokens_a = mg.generate(["jazz", "rock"], 0.015, seed=7, return_tokens=True, **kwargs)
    b, tokens_b = mg.generate(["jazz", "rock"], 0.015, seed=7, return_tokens=True, **kwargs)
    c = mg.generate_tokens(["jazz", "rock"], 0.015, seed=8, **kwargs)
    assert torch.equal(tokens_a, tokens_b) and torch.equal(a, b)
    assert not torch.equal(tokens_a, c)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert a.shape == (2, 1, 15 * 32) and tokens_a.shape == (2, 4, 15)
    assert int(tokens_a.min()) >= 0 and int(tokens_a.max()) < 64


def test_long_duration_slides_the_window(mono):
    *_, mg = mono
    mg.max_duration = 0.012  # 12 frames per window
    try:
        seen = []
        tokens = mg.generate_tokens(
            "jazz", 0.03, seed=1, top_k=10, extend_stride=0.008, progress=lambda done, total: seen.append(done)
        )
        assert tokens.shape == (1, 4, 30)
        assert seen[-1] == pytest.approx(0.03) and seen == sorted(seen)
        # each window continues the last 4 frames of the one before, so it is not a fresh start
        first = mg.generate_tokens("jazz", 0.012, seed=1, top_k=10)
        assert torch.equal(tokens[..., :12], first)
    finally:
        mg.max_duration = 30.0


def test_static_step_matches_eager_step(mono):
    """The fixed-shape step captured in CUDA graphs computes what the eager step does."""
    *_, mg = mono
    lm = mg.lm
    memory = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    tokens = torch.randint(0, 64, (2, 4, 9))
    eager, static = lm.new_cache(2, 16), lm.new_cache(2, 16)
    lm.set_memory(eager, memory, mask)
    lm.set_memory(static, memory, mask)
    with torch.inference_mode():
        lm.prefill(tokens[..., :3], eager)
        lm.prefill(tokens[..., :3], static)
        for t in range(3, 9):
            a = lm.step(tokens[..., t : t + 1], t, eager)
            for span in (t + 1, 12, None):  # exactly the filled frames, a bucket past them, the whole cache
                b = lm.step_static(tokens[..., t : t + 1], torch.tensor(t), static, span)
                assert torch.allclose(a, b, atol=1e-5, rtol=0)
        for span in (0, 17):
            with pytest.raises(ValueError, match="span"):
                lm.step_static(tokens[..., :1], torch.tensor(0), static, span)


def _poisoned_caches(monkeypatch, lm_class, keep: int):
    """Make every new KV cache hold NaN in its self-attention keys and values from frame ``keep`` on
    and 1e4 before it: a step that reads an unfilled frame past its span turns the logits into NaN,
    one that uses an unfilled frame inside its span (a broken mask) changes them."""
    new_cache = lm_class.new_cache

    def poisoned(self, batch, length):
        cache = new_cache(self, batch, length)
        for part in (cache.keys, cache.values):
            part.fill_(float("nan"))
            part[:, :, :, :keep].fill_(1e4)
        return cache

    monkeypatch.setattr(lm_class, "new_cache", poisoned)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_attention_reads_only_the_filled_cache(mono, monkeypatch, device):
    """Greedy decoding over caches poisoned past the filled frames chooses what it chooses over clean
    caches (the clean runs match transformers in the tests above): eager steps read exactly the filled
    frames; graphed steps (CUDA) read up to their span bucket (73 steps: past the first bucket),
    masking its unfilled frames. (Not against transformers here: 73 steps exceed its 64 positions.)"""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from fastencodec.musicgen import stepping
    from fastencodec.musicgen.decoder import MusicGenLM

    *_, path, mg = mono
    if device == "cuda":
        mg = MusicGen.from_pretrained(path, "cuda")
    prompts = ["jazz piano", "loud fast rock drums with bass and guitar"]
    frames = 70
    keep = 0 if device == "cpu" else -(-(frames + 3) // stepping.SPAN_BUCKET) * stepping.SPAN_BUCKET
    clean = _ours(mg, prompts, frames, 3.0)
    with monkeypatch.context() as patch:
        _poisoned_caches(patch, MusicGenLM, keep)
        mg._decoders.clear()  # a new cache (and graphs) for this run
        poisoned = _ours(mg, prompts, frames, 3.0)
    mg._decoders.clear()
    assert torch.equal(poisoned[0], clean[0])
    assert len(poisoned[2]) == len(clean[2]) == frames + 3
    for a, b in zip(poisoned[2], clean[2]):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


def test_top_level_generate_is_lazy_and_uses_the_default_model(mono, monkeypatch):
    import subprocess
    import sys

    code = (
        "import sys, fastencodec; assert 'fastencodec.musicgen' not in sys.modules; "
        "assert 'tokenizers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import fastencodec
    from fastencodec.musicgen import defaults as module

    *_, path, _ = mono
    monkeypatch.setattr(module, "DEFAULT_MODEL", str(path))
    monkeypatch.setattr(module, "_DEFAULTS", {})
    audio = fastencodec.generate("jazz piano", duration=0.01, seed=3, top_k=5, device="cpu")
    again = fastencodec.generate("jazz piano", duration=0.01, seed=3, top_k=5, device="cpu")
    assert audio.shape == (1, 1, 320) and torch.equal(audio, again)
    assert len(module._DEFAULTS) == 1


# -- bad input ----------------------------------------------------------------------------------


def test_bad_generation_arguments(mono):
    *_, mg = mono
    with pytest.raises(ValueError, match="empty list"):
        mg.generate([], 1.0, top_k=5)
    for duration in (-1.0, 0.0, float("nan"), 1e9):
        with pytest.raises(ValueError, match="duration"):
            mg.generate("jazz", duration, top_k=5)
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        mg.generate("jazz", 0.01)  # default top_k=250 > 64 tokens
    with pytest.raises(ValueError, match="temperature"):
        mg.generate("jazz", 0.01, top_k=5, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        mg.generate("jazz", 0.01, top_k=5, top_p=1.5)
    with pytest.raises(ValueError, match="guidance_scale"):
        mg.generate("jazz", 0.01, top_k=5, guidance_scale=0.5)
    with pytest.raises(ValueError, match="prompts\\[1\\]"):
        mg.generate(["jazz", 3], 0.01, top_k=5)
    with pytest.raises(ValueError, match="longer"):
        mg.generate("jazz", 0.005, top_k=5, audio_prompt=np.zeros(320, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        mg.generate("jazz", 0.02, top_k=5, audio_prompt=np.full(320, np.nan, np.float32))


def test_batch_too_large_for_memory_is_refused(mono):
    *_, mg = mono
    with pytest.raises(MemoryError, match="smaller batch"):
        mg.generate_tokens(["jazz"] * 200_000, 30.0, top_k=5)


def test_bad_checkpoints(mono, tmp_path):
    *_, path, _ = mono
    with pytest.raises(FileNotFoundError, match="no such directory"):
        MusicGen.from_pretrained(tmp_path / "missing")
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(path, no_tok)
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        MusicGen.from_pretrained(no_tok, "cpu")
    other = tmp_path / "encodec"
    shutil.copytree(path, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(cfg["audio_encoder"]))
    with pytest.raises(ValueError, match="not a MusicGen"):
        MusicGen.from_pretrained(other, "cpu")
    pickled = tmp_path / "pickled"
    shutil.copytree(path, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled"):
        MusicGen.from_pretrained(pickled, "cpu")


def test_sharded_checkpoint_loads(mono, tmp_path):
    model, tok, path, mg = mono
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    shutil.copy(path / "tokenizer.json", tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded = MusicGen.from_pretrained(tmp_path, "cpu")
    a = sharded.generate_tokens("jazz", 0.01, do_sample=False)
    assert torch.equal(a, mg.generate_tokens("jazz", 0.01, do_sample=False))


def test_cli_generate_writes_the_audio_the_api_makes(mono, tmp_path, capsys):
    import soundfile as sf

    from fastencodec.cli import main

    *_, path, mg = mono
    out = tmp_path / "jazz.wav"
    args = ["generate", "jazz piano", "-d", "0.02", "--model", str(path), "--device", "cpu", "--top-k", "5"]
    assert main([*args, "--seed", "4", "-o", str(out)]) == 0
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    expected = mg.generate("jazz piano", 0.02, top_k=5, seed=4)
    assert rate == 32000 and audio.shape == (640, 1)
    assert np.allclose(audio.T, expected[0].numpy(), atol=1e-6)
    assert "s of audio" in capsys.readouterr().err
    assert main([*args, "-o", str(out)]) == 1  # exists, no -f
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--top-k", "500", "-o", str(tmp_path / "x.wav")]) == 2
    assert "larger than the vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    assert main(["generate", "x", "--model", str(tmp_path / "none"), "-o", str(tmp_path / "y.wav")]) == 1


def test_stereo_audio_prompt_matches_transformers(stereo):
    model, tok, _, mg = stereo
    t = np.arange(256) / 32000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.25 * np.cos(2 * np.pi * 520 * t)])[None].astype(np.float32)
    new = 10
    theirs = _theirs(model, tok, ["bass"], new, 3.0, input_values=torch.from_numpy(audio))
    ours = _ours(mg, ["bass"], 8 + 1 + new - 4, 3.0, audio_prompt=audio)
    _compare(theirs, ours)


@pytest.mark.parametrize("top_k, top_p, temperature", [(5, 0.0, 1.0), (0, 0.7, 0.8), (20, 0.9, 1.3), (64, 0.5, 1.0)])
def test_sampling_filters_match_transformers(top_k, top_p, temperature):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from fastencodec.musicgen.sampling import Sampling

    logits = torch.randn(6, 64, generator=torch.Generator().manual_seed(top_k)) * 3
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p:
        expected = TopPLogitsWarper(top_p)(None, expected)
    ours = Sampling(3.0, top_k, top_p, temperature).filter(logits)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    assert torch.allclose(ours[~torch.isinf(ours)], expected[~torch.isinf(expected)])


def test_greedy_tokens_do_not_depend_on_the_batch(mono):
    *_, mg = mono
    prompts = ["jazz piano", "loud fast rock drums with bass and guitar", None]
    together = mg.generate_tokens(prompts, 0.012, do_sample=False)
    for i, prompt in enumerate(prompts):
        assert torch.equal(mg.generate_tokens([prompt], 0.012, do_sample=False), together[i : i + 1])


def test_one_model_shared_by_threads(mono):
    from concurrent.futures import ThreadPoolExecutor

    *_, mg = mono
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda s: mg.generate_tokens("calm", 0.012, seed=s % 2, top_k=8), range(4)))
    assert torch.equal(runs[0], runs[2]) and torch.equal(runs[1], runs[3])


def test_sampled_tokens_do_not_depend_on_the_batch(mono):
    *_, mg = mono
    prompts = ["jazz piano", "loud fast rock drums with bass and guitar", None]
    kwargs = dict(top_k=20, top_p=0.9, temperature=1.3)
    together = mg.generate_tokens(prompts, 0.012, seed=11, **kwargs)
    for i, prompt in enumerate(prompts):  # the seed rule: item i of a batch seeded s draws as seed s + i
        assert torch.equal(mg.generate_tokens(prompt, 0.012, seed=11 + i, **kwargs), together[i : i + 1])
    listed = mg.generate_tokens(prompts[::-1], 0.012, seed=[13, 12, 11], **kwargs)
    assert torch.equal(listed, together.flip(0))  # a list gives each item its seed, in any order
    assert not torch.equal(together[0], together[1])  # different prompts and seeds do differ
    for bad in (-1, 2**63, 1.5, True, [1, 2]):
        with pytest.raises(ValueError, match="seed"):
            mg.generate_tokens(prompts, 0.012, seed=bad, top_k=20)


# -- GPU: the captured step ---------------------------------------------------------------------

def cuda(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


@cuda
def test_cuda_graph_decode_matches_eager_and_transformers(mono):
    """The whole step (LM, guidance, filters, sampling, delay pattern) replayed as one CUDA graph
    chooses what the eager step chooses, greedy or seeded; greedy tokens equal transformers'."""
    model, tok, path, _ = mono
    mg = MusicGen.from_pretrained(path, "cuda")
    prompts = ["jazz piano", "loud fast rock drums with bass and guitar"]
    runs = {}
    for graphs in (True, False):
        mg.use_cuda_graphs = graphs
        runs[graphs] = [
            _ours(mg, prompts, 20, 3.0),
            mg.generate_tokens(prompts, 0.02, seed=5, top_k=20, top_p=0.9, temperature=1.2),
            mg.generate_tokens(prompts, 0.02, seed=5, top_k=20, top_p=0.9, temperature=1.2),  # graph kept
        ]
    (greedy, sampled, again), (greedy_eager, sampled_eager, _) = runs[True], runs[False]
    assert torch.equal(greedy[0], greedy_eager[0]) and torch.equal(sampled, sampled_eager)
    assert torch.equal(sampled, again)
    for a, b in zip(greedy[2], greedy_eager[2]):
        assert torch.allclose(a, b, atol=1e-4, rtol=0)
    codes, *_ = _theirs(model, tok, prompts, 20 + 3, 3.0)
    assert torch.equal(greedy[0], codes)


@cuda
def test_cuda_sampled_items_do_not_depend_on_the_batch(mono):
    *_, path, _ = mono
    mg = MusicGen.from_pretrained(path, "cuda")
    prompts = ["jazz piano", None, "calm ambient synth"]
    together = mg.generate_tokens(prompts, 0.03, seed=21, top_k=16)
    for i, prompt in enumerate(prompts):
        assert torch.equal(mg.generate_tokens(prompt, 0.03, seed=21 + i, top_k=16), together[i : i + 1])
