"""The corpus tokenizer (``fastencodec tokenize``/``detokenize``, ``fastencodec.corpus``).

Tiny random-weight models saved in the Hugging Face layout (``tests.support.save_tiny``); short generated audio in
wav/flac/mp3/ogg, mono and stereo, 8 to 96 kHz, plus one corrupt and one empty file.
"""

import concurrent.futures
import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from fastencodec import EnCodec
from fastencodec.cli import main
from fastencodec.corpus import detokenize, read_manifest, read_shards, tokenize_corpus
from fastencodec.corpus.manifest import CorpusMismatchError
from fastencodec.corpus.ranks import Rank, from_environment
from fastencodec.corpus.sources import CorpusInputError, collect_items
from fastencodec.io.audio import AudioReader, read_audio, to_channels
from fastencodec.io.resample import resample
from tests.support import HF_48KHZ, save_tiny, speech_like

ROOT = Path(__file__).resolve().parents[1]
seek = AudioReader.seek
CHUNK = 1 << 16  # the codec's CPU stream chunk: pieces are whole numbers of it
TINY_24KHZ = {"num_filters": 2, "hidden_size": 8, "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0]}
TINY_48KHZ = {k: v for k, v in HF_48KHZ.items() if k != "model_type"} | {"num_filters": 2, "hidden_size": 8}


def tone(rate: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """Speech-like test audio ``[samples, channels]`` (soundfile's layout)."""
    return speech_like(rate, channels, seconds, seed).numpy().T


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is many times faster


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"24": save_tiny(root / "tiny24", **TINY_24KHZ), "48": save_tiny(root / "tiny48", **TINY_48KHZ)}


@pytest.fixture(scope="module")
def codec24(models):
    return EnCodec.from_pretrained(models["24"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A mixed folder: formats, rates, channels, lengths, a corrupt and an empty file."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "speech" / "deep").mkdir(parents=True)
    files = {
        "a_mono_8k.wav": (8000, 1, 1.3), "speech/b_stereo_44k.flac": (44100, 2, 0.8),
        "speech/c_22k.mp3": (22050, 1, 1.1), "speech/deep/d_96k.ogg": (96000, 2, 0.6),
        "e_long_16k.flac": (16000, 1, 7.0), "f_48k.wav": (48000, 2, 2.2),
    }
    for seed, (name, (rate, channels, seconds)) in enumerate(files.items()):
        sf.write(root / name, tone(rate, channels, seconds, seed), rate)
    (root / "speech" / "corrupt.ogg").write_bytes(b"OggS" + bytes(range(256)) * 4)
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("not audio\n")
    return root


def conformed(path, codec: EnCodec, offset=None, duration=None) -> np.ndarray:
    """The reference: the whole file read, cut, mixed and resampled at once (not streamed)."""
    audio, rate = read_audio(path)
    start = 0 if offset is None else round(offset * rate)
    audio = audio[:, start : None if duration is None else start + round(duration * rate)]
    mixed = audio.shape[0] if audio.shape[0] == codec.channels else 1
    return to_channels(np.asarray(resample(to_channels(audio, mixed), rate, codec.sample_rate)), codec.channels)


def assert_rows_match_encode(out: Path, codec: EnCodec, source: Path, bandwidth: float) -> list:
    rows = list(read_shards(out))
    for row in rows:
        audio = conformed(source / row.path, codec, row.offset, None)
        tokens = codec.encode(audio[None], bandwidth)
        frames = codec.layout.total_frames(audio.shape[1])
        assert row.codes.dtype == np.int16 and row.frames == frames == row.codes.shape[1], row.path
        np.testing.assert_array_equal(row.codes, np.asarray(tokens.codes)[0, :, :frames], err_msg=row.path)
        assert row.samples == audio.shape[1] and row.duration == audio.shape[1] / codec.sample_rate
        if tokens.scales is None:
            assert row.scales.size == 0
        else:
            np.testing.assert_array_equal(row.scales, np.asarray(tokens.scales)[0, : row.scales.size])
            assert row.scales.size == codec.layout.count(audio.shape[1])
    return rows


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def cli(*args, log: Path, env=None) -> subprocess.Popen:
    """``fastencodec ARGS`` in a subprocess, its stderr to ``log`` (a file: killed runs leave no pipes open)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | (env or {})
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "fastencodec", *map(str, args)], env=environment,
                                stdout=subprocess.DEVNULL, stderr=err)


# -- codes ------------------------------------------------------------------------------------------


def test_mixed_folder_codes_equal_encode_of_each_file(corpus, codec24, tmp_path):
    """Workers decode, long files stream in pieces, items share batches: every row is encode() of its file."""
    out = tmp_path / "out"
    summary = tokenize_corpus(corpus, out, codec24, 3.0, workers=2, shard_size=3, piece_samples=CHUNK)
    assert (summary.coded, summary.failed, summary.written, summary.skipped) == (6, 2, 3, 0)
    rows = assert_rows_match_encode(out, codec24, corpus, 3.0)
    assert [r.path for r in rows] == [
        "a_mono_8k.wav", "e_long_16k.flac", "f_48k.wav", "speech/b_stereo_44k.flac", "speech/c_22k.mp3",
        "speech/deep/d_96k.ogg",
    ]
    assert max(r.samples for r in rows) > 2 * CHUNK  # the long file went through the stream path
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["path"]: e["shard"] for e in errors} == {"empty.wav": 0, "speech/corrupt.ogg": 2}
    assert "empty" in errors[0]["reason"] and "corrupt" in errors[1]["reason"]
    manifest = read_manifest(out)
    assert manifest["model_id"] == codec24.model_id and manifest["bandwidth"] == 3.0
    assert (manifest["codebooks"], manifest["sample_rate"], manifest["frame_rate"]) == (4, 24000, 75)
    assert manifest["precision"] == "exact" and [s["file"] for s in manifest["shards"]] == [
        "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"
    ]
    table = pq.read_table(out / "shard-00000.parquet")
    assert table.schema.field("codes").type == pa.list_(pa.list_(pa.int16()))
    assert table.column_names == ["path", "codes", "frames", "samples", "duration", "scales"]
    # in-process decoding and one-item pools give the same bytes
    again = tmp_path / "again"
    tokenize_corpus(corpus, again, codec24, 3.0, workers=0, shard_size=3, window_samples=1)
    assert tree_bytes(again) == tree_bytes(out)


def test_48khz_segments_stream_with_their_scales(corpus, models, tmp_path):
    """The normalising model: long items are cut in segments as encode() cuts them, scales kept per segment."""
    codec = EnCodec.from_pretrained(models["48"])
    inputs = [corpus / "f_48k.wav", corpus / "speech" / "b_stereo_44k.flac", corpus / "a_mono_8k.wav"]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in inputs))
    tokenize_corpus(listing, tmp_path / "out", codec, 6.0, workers=0, piece_samples=CHUNK)
    rows = assert_rows_match_encode(tmp_path / "out", codec, Path("/"), 6.0)
    assert [r.path for r in rows] == [str(p) for p in inputs] and rows[0].scales.size == 3


def test_manifest_segments_carry_their_offset(corpus, codec24, tmp_path, monkeypatch):
    manifest = tmp_path / "cuts.jsonl"
    records = [{"path": "e_long_16k.flac", "offset": 1.5, "duration": 2.0}, {"path": "e_long_16k.flac"},
               {"path": "f_48k.wav", "offset": 0.25}, {"path": "c_22k.mp3", "offset": 0.5, "duration": 0.3},
               {"path": "f_48k.wav", "offset": 30.0}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    for source in ("e_long_16k.flac", "f_48k.wav", "speech/c_22k.mp3"):
        (tmp_path / Path(source).name).symlink_to(corpus / source)
    seeks = []
    monkeypatch.setattr(AudioReader, "seek", lambda reader, n: seeks.append(skipped := seek(reader, n)) or skipped)
    summary = tokenize_corpus(manifest, tmp_path / "out", codec24, workers=0)
    assert (summary.coded, summary.failed) == (4, 1)  # offset past the end: no audio
    assert seeks == [24000, 12000, 0, 105600]  # flac and wav seek to their offset (the last: to its end); mp3 not
    rows = list(read_shards(tmp_path / "out"))
    assert [(r.path, r.offset) for r in rows] == [("e_long_16k.flac", 1.5), ("e_long_16k.flac", 0.0),
                                                  ("f_48k.wav", 0.25), ("c_22k.mp3", 0.5)]
    assert rows[0].samples == 48000
    for row, record in zip(rows, records):
        audio = conformed(tmp_path / row.path, codec24, record.get("offset"), record.get("duration"))
        np.testing.assert_array_equal(row.codes, np.asarray(codec24.encode(audio[None]).codes)[0])
    assert "no audio from 30.0 s" in (tmp_path / "out" / "errors.jsonl").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "x.wav", "offset": -1}\n')
    with pytest.raises(CorpusInputError, match="line 1: offset must be >= 0"):
        collect_items([bad])


def test_rows_decode_and_detokenize(corpus, codec24, tmp_path, models):
    tokenize_corpus(corpus / "speech", tmp_path / "out", codec24, workers=0)
    rows = list(read_shards(tmp_path / "out"))
    assert main(["detokenize", str(tmp_path / "out"), "--out", str(tmp_path / "audio"), "--model",
                 str(models["24"]), "-q"]) == 0
    for row in rows:
        decoded, rate = read_audio((tmp_path / "audio" / row.path).with_suffix(".wav"))
        expected = codec24.decode(row.tokens())[0]
        assert rate == 24000 and decoded.shape == expected.shape == (1, row.samples)
        np.testing.assert_allclose(decoded, expected, atol=1e-5)
    with pytest.raises(ValueError, match="coded by"):
        detokenize(tmp_path / "out", tmp_path / "x", EnCodec.from_pretrained(models["48"]))


# -- faults, resume, ranks ------------------------------------------------------------------------------


def test_other_bandwidth_or_model_into_same_folder_is_refused(corpus, codec24, models, tmp_path, capsys):
    tokenize_corpus(corpus / "speech", tmp_path, codec24, 1.5, workers=0)
    before = tree_bytes(tmp_path)
    args = ["tokenize", str(corpus / "speech"), "--out", str(tmp_path), "--workers", "0", "-q"]
    assert main(args + ["--model", str(models["24"]), "-b", "3"]) == 1
    err = capsys.readouterr().err
    assert "holds tokens of" in err and "at 1.5 kbps" in err and "at 3.0 kbps" in err
    with pytest.raises(CorpusMismatchError):
        tokenize_corpus(corpus / "speech", tmp_path, EnCodec.from_pretrained(models["48"]), 6.0, workers=0)
    with pytest.raises(CorpusMismatchError, match="other inputs"):
        tokenize_corpus(corpus, tmp_path, codec24, 1.5, workers=0)
    assert main(args + ["--model", str(models["24"]), "-b", "7"]) == 2  # a bandwidth the model lacks
    assert tree_bytes(tmp_path) == before
    # the same run again: nothing to do, failures still counted (exit 1: some items could not be read)
    assert main(args + ["--model", str(models["24"]), "-b", "1.5"]) == 1
    assert "1 items could not be read" in capsys.readouterr().err
    assert tree_bytes(tmp_path) == before


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """Twelve 2-second files, for runs that take long enough to be killed mid-way."""
    root = tmp_path_factory.mktemp("many")
    for i in range(12):
        sf.write(root / f"{i:02d}.flac", tone(16000, 1, 2.0, i), 16000)
    (root / "05_broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    return root


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_shards(many, models, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    common = ["--model", models["24"], "--shard-size", "2", "--workers", "1", "-q"]
    whole = cli("tokenize", many, "--out", reference, *common, log=tmp_path / "whole.log")
    run = cli("tokenize", many, "--out", killed, *common, log=tmp_path / "killed.log")
    deadline = time.monotonic() + 120
    while not (killed / "shard-00000.parquet").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait(30)
    assert whole.wait(120) == 1, (tmp_path / "whole.log").read_text()  # one unreadable file
    done = {p.name for p in killed.glob("shard-*.parquet")}
    assert "shard-00000.parquet" in done and len(done) < 7, done
    rerun = cli("tokenize", many, "--out", killed, *common, log=tmp_path / "rerun.log")
    assert rerun.wait(120) == 1 and "1 items could not be read" in (tmp_path / "rerun.log").read_text()
    assert tree_bytes(killed) == tree_bytes(reference)
    assert len(list(read_shards(killed))) == 12


@pytest.mark.slow
def test_two_ranks_write_exactly_the_shards_of_one_process(many, models, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--model", models["24"], "--shard-size", "3", "--workers", "0", "-q"]
    runs = [cli("tokenize", many, "--out", two, *common, log=tmp_path / f"{r}.log",
                env={"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": "0"}) for r in (0, 1)]
    # the broken file is item 6 (05.flac < 05_broken.wav), in shard 2, which rank 0 codes
    assert [run.wait(120) for run in runs] == [1, 0]
    tokenize_corpus(many, one, EnCodec.from_pretrained(models["24"]), shard_size=3, workers=0)
    assert tree_bytes(two) == tree_bytes(one)


def test_launcher_variables():
    assert from_environment({}) == Rank(0, 1, 0)
    assert from_environment({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Rank(3, 8, 1)
    assert from_environment({"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "2"}) == Rank(5, 6, 2)
    with pytest.raises(ValueError):
        from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    assert [i for i in range(7) if Rank(1, 3).owns(i)] == [1, 4]


# -- readers ----------------------------------------------------------------------------------------


def test_datasets_and_pandas_read_the_shards(corpus, codec24, tmp_path):
    datasets = pytest.importorskip("datasets")
    tokenize_corpus(corpus, tmp_path, codec24, workers=0, shard_size=4)
    rows = list(read_shards(tmp_path))
    files = sorted(str(p) for p in tmp_path.glob("shard-*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files=files, split="train",
                                   cache_dir=str(tmp_path / ".hf-cache"))
    assert loaded["path"] == [r.path for r in rows]
    for row, record in zip(rows, loaded):
        np.testing.assert_array_equal(np.array(record["codes"]), row.codes)
        assert record["frames"] == row.frames and record["samples"] == row.samples
    frame = pytest.importorskip("pandas").read_parquet(files[0])
    assert list(frame["path"]) == [r.path for r in rows[: len(frame)]]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (extra: ray)")
def test_ray_data_path_writes_the_same_shards(corpus, codec24, models, tmp_path):
    import ray

    from fastencodec.corpus.ray_data import tokenize_with_ray

    tokenize_corpus(corpus, tmp_path / "local", codec24, 3.0, workers=0, shard_size=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    try:
        summary = tokenize_with_ray([corpus], tmp_path / "ray", models["24"], 3.0, shard_size=3, batch_size=4)
    finally:
        ray.shutdown()
    assert (summary.coded, summary.failed) == (6, 2)
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def test_long_items_travel_in_bounded_pieces(corpus, codec24):
    """A long file never crosses the queue whole: pieces of piece_samples, the last 1..piece_samples."""
    from fastencodec.corpus.sources import Item
    from fastencodec.corpus.workers import Piece, Whole, item_messages

    path = str(corpus / "e_long_16k.flac")
    messages = list(item_messages(7, Item("x", path), 24000, 1, CHUNK))
    assert all(isinstance(m, Piece) and m.index == 7 for m in messages) and messages[-1].last
    assert [m.audio.shape[1] for m in messages[:-1]] == [CHUNK] * (len(messages) - 1)
    assert 0 < messages[-1].audio.shape[1] <= CHUNK and not any(m.last for m in messages[:-1])
    whole = np.concatenate([m.audio for m in messages], axis=1)
    np.testing.assert_array_equal(whole, conformed(path, codec24))
    (short,) = item_messages(0, Item("x", path), 24000, 1, whole.shape[1])  # exactly one piece: whole
    assert isinstance(short, Whole) and short.audio.shape == whole.shape


# -- decoding workers that die ----------------------------------------------------------------------


def kill_decoders_of(path: Path, times: int, stop: threading.Event, signum: int = signal.SIGKILL) -> list[int]:
    """Send ``signum`` (SIGKILL), ``times`` times, to the decoding worker that has ``path`` open
    (each a fresh one); returns the pids signalled (until ``stop``)."""
    target, killed = os.path.realpath(path), []
    while len(killed) < times and not stop.wait(0.01):
        for child in multiprocessing.active_children():
            if child.pid in killed:
                continue
            try:
                links = [os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{child.pid}/fd")]
            except OSError:  # it ended, or an fd closed while listed
                continue
            if target in links:
                os.kill(child.pid, signum)
                killed.append(child.pid)
    return killed


@pytest.fixture(scope="module")
def with_long(tmp_path_factory):
    """Six short files and a long one (decoded in many pieces, so its worker holds it open for a while)."""
    root = tmp_path_factory.mktemp("with_long")
    for i in range(6):
        sf.write(root / f"{i:02d}.flac", tone(16000, 1, 1.0, i), 16000)
    sf.write(root / "03_long.flac", tone(16000, 1, 40.0, 9), 16000)
    return root


@pytest.mark.parametrize(
    ("kills", "signum"), [(1, signal.SIGKILL), (2, signal.SIGKILL), (1, signal.SIGSTOP), (2, signal.SIGSTOP)]
)
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the worker through /proc")
def test_a_killed_or_hung_worker_is_replaced_and_its_item_retried_once(with_long, codec24, tmp_path, kills, signum):
    """SIGKILL: a decoder that crashes; SIGSTOP: one that hangs (stopped after ``decode_timeout``)."""
    reference = tmp_path / "reference"
    tokenize_corpus(with_long, reference, codec24, workers=0, shard_size=2, piece_samples=CHUNK)
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as watcher:
        killed = watcher.submit(kill_decoders_of, with_long / "03_long.flac", kills, stop, signum)
        try:
            summary = tokenize_corpus(with_long, tmp_path / "out", codec24, workers=2, shard_size=2,
                                      piece_samples=CHUNK, decode_timeout=1.0)
        finally:
            stop.set()
        assert len(killed.result()) == kills  # each time, a fresh worker had the file open
    rows, expected = list(read_shards(tmp_path / "out")), list(read_shards(reference))
    if kills == 1:  # retried in a fresh worker: the same output as a run without faults
        assert (summary.coded, summary.failed) == (7, 0)
        assert tree_bytes(tmp_path / "out") == tree_bytes(reference)
        return
    assert (summary.coded, summary.failed) == (6, 1)
    (error,) = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    why = "SIGKILL" if signum == signal.SIGKILL else "sent no audio for 1 s, stopped as hung"
    assert error["path"] == "03_long.flac" and "died twice" in error["reason"] and why in error["reason"]
    assert [r.path for r in rows] == [r.path for r in expected if r.path != "03_long.flac"]
    for row, same in zip(rows, [r for r in expected if r.path != "03_long.flac"]):
        np.testing.assert_array_equal(row.codes, same.codes)


def test_detokenize_loads_only_published_models_named_by_a_manifest(corpus, codec24, models, tmp_path, capsys):
    """A manifest is a file: its model name must not make detokenize load local weights."""
    tokenize_corpus(corpus / "speech", tmp_path / "out", codec24, workers=0)
    path = tmp_path / "out" / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"model": str(models["24"])}))
    args = ["detokenize", str(tmp_path / "out"), "--out", str(tmp_path / "audio"), "-q"]
    assert main(args) != 0
    assert str(models["24"]) in capsys.readouterr().err and not (tmp_path / "audio").exists()
    with pytest.raises(FileNotFoundError):
        detokenize(tmp_path / "out", tmp_path / "audio")
    assert main(args + ["--model", str(models["24"])]) == 0  # the user's own choice may be local
    assert len(list((tmp_path / "audio").rglob("*.wav"))) == 3


def test_an_error_while_coding_stops_the_run_and_its_workers(corpus, codec24, tmp_path, monkeypatch):
    import fastencodec.corpus.api as api

    def broken(*args):
        raise RuntimeError("out of memory (a stand-in)")

    monkeypatch.setattr(api, "encode_group", broken)
    with pytest.raises(RuntimeError, match="a stand-in"):
        tokenize_corpus(corpus, tmp_path, codec24, workers=1, window_samples=1)
    assert not list(tmp_path.glob("shard-*.parquet"))
    deadline = time.monotonic() + 30
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_groups_reach_the_gpu_through_pinned_memory_with_the_codes_of_encode(models):
    from fastencodec.corpus.batching import encode_group

    codec = EnCodec.from_pretrained(models["24"], device="cuda")
    items = [(i, np.ascontiguousarray(tone(24000, 1, seconds, i).T)) for i, seconds in enumerate((0.3, 1.1, 0.7))]
    pinned = []
    empty = torch.empty
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "empty", lambda *a, **k: pinned.append(k.get("pin_memory")) or empty(*a, **k))
        coded = encode_group(codec, 4, items)
    assert True in pinned
    for (index, audio), result in zip(items, coded):
        assert result.index == index
        np.testing.assert_array_equal(result.codes, np.asarray(codec.encode(audio[None], 3.0).codes)[0])


def test_a_shard_that_cannot_be_written_stops_the_run(corpus, codec24, tmp_path, monkeypatch):
    """Shards are written on a thread while coding goes on; its error reaches the caller."""
    import fastencodec.corpus.run as run

    def full(path, table):
        raise OSError(28, "No space left on device (a stand-in)")

    monkeypatch.setattr(run.shard_files, "write_shard", full)
    with pytest.raises(OSError, match="a stand-in"):
        tokenize_corpus(corpus, tmp_path, codec24, workers=0, shard_size=2)
    assert not list(tmp_path.glob("shard-*.parquet"))


def test_the_feeder_holds_at_most_a_window_and_hands_out_length_sorted_groups():
    from fastencodec.corpus.feeder import Feeder, Group
    from fastencodec.corpus.workers import Whole

    produced = []

    def messages():
        for i in range(40):
            produced.append(i)
            yield Whole(i, np.zeros((1, 10 + (7 * i) % 5), np.float32))

    with Feeder(messages(), window=50) as feeder:
        deadline = time.monotonic() + 30
        while len(produced) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(produced) == 6  # 5 items (60 samples) held, the 6th waits to be put: nothing more is read
        jobs = list(feeder.jobs())
    assert all(isinstance(job, Group) for job in jobs)
    for job in jobs:
        lengths = [audio.shape[1] for _, audio in job.items]
        assert lengths == sorted(lengths)
    assert sorted(i for job in jobs for i, _ in job.items) == list(range(40))


def test_a_decode_timeout_that_is_not_positive_is_refused(with_long, codec24, tmp_path):
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="decode_timeout must be positive seconds or None"):
            tokenize_corpus(with_long, tmp_path / "out", codec24, decode_timeout=bad)
    assert not (tmp_path / "out").exists()
    assert main(["tokenize", str(with_long), "--out", str(tmp_path / "out"), "--decode-timeout", "0", "-q"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_worker_decoding_its_way_to_a_far_offset_is_not_taken_for_hung(codec24, tmp_path):
    """An MP3 segment near the end of a long file is decoded from the start (no audio sent for a
    while): the worker's heartbeats keep a short ``decode_timeout`` from stopping it."""
    rate = 16000
    audio = tone(rate, 1, 300.0, 4) * 0.5
    with sf.SoundFile(tmp_path / "long.mp3", "w", rate, 1, format="MP3", subtype="MPEG_LAYER_III") as f:
        for start in range(0, audio.shape[0], 1 << 16):
            f.write(audio[start : start + (1 << 16)])
    (tmp_path / "cut.jsonl").write_text(json.dumps({"path": "long.mp3", "offset": 298.0, "duration": 1.0}) + "\n")
    summary = tokenize_corpus(tmp_path / "cut.jsonl", tmp_path / "out", codec24, workers=1, decode_timeout=0.04)
    assert (summary.coded, summary.failed) == (1, 0)


def test_an_item_that_overflows_fp16_fails_alone(tmp_path, monkeypatch):
    """fp16 tops out at 65504: a float WAV that loud fails in errors.jsonl and its group-mates are
    coded as alone (CPU fp16 through torch's portable kernels, as in test_precision.py)."""
    from fastencodec import RuntimePolicy
    from fastencodec.kernels import precision
    from fastencodec.nn.config import EncodecConfig
    from fastencodec.nn.model import EncodecModel

    monkeypatch.setattr(precision, "cpu_has_fp16", lambda: True)
    torch.manual_seed(5)
    model = EncodecModel(EncodecConfig(n_filters=2, dimension=8, name="encodec_24khz")).eval().requires_grad_(False)
    codec = EnCodec(model, policy=RuntimePolicy(precision="fp16"))
    (tmp_path / "in").mkdir()
    for i, gain in enumerate([1.0, 1e6, 1.0]):
        sf.write(tmp_path / "in" / f"{i}.wav", (tone(24000, 1, 0.5, 3 + i) * gain).astype(np.float32), 24000,
                 subtype="FLOAT")
    summary = tokenize_corpus(tmp_path / "in", tmp_path / "out", codec, workers=0)
    assert (summary.coded, summary.failed) == (2, 1)
    (error,) = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["path"] == "1.wav" and "overflowed float16" in error["reason"] and "'exact'" in error["reason"]
    for row in read_shards(tmp_path / "out"):
        audio = read_audio(tmp_path / "in" / row.path)[0]
        np.testing.assert_array_equal(row.codes, np.asarray(codec.encode(torch.from_numpy(audio)[None]).codes)[0])
