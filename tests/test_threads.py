"""One shared EnCodec used from several threads gives exactly the sequential results; no global state changes."""

import os
import threading

import numpy as np
import pytest
import torch

from tests.support import speech_like


def work(codec, seed):
    """Encode, decode and stream one signal; returns everything it produced."""
    audio = speech_like(24_000, 1, 0.6, seed=seed)
    tokens = codec.encode(audio, bandwidth=6.0)
    decoded = codec.decode(tokens)
    encoder, decoder = codec.stream_encoder(6.0), codec.stream_decoder()
    pieces = [encoder.push(audio[None, :, i : i + 2_000]) for i in range(0, audio.shape[-1], 2_000)]
    pieces.append(encoder.flush())
    codes = np.concatenate(pieces, axis=-1)
    heard = np.concatenate([decoder.push(codes), decoder.flush()], axis=-1)
    return np.asarray(tokens), np.asarray(decoded), codes, heard


def test_four_threads_share_one_model(codec24):
    sequential = [work(codec24, seed) for seed in range(4)]
    results = [None] * 4
    errors = []

    def run(i):
        try:
            for _ in range(2):
                results[i] = work(codec24, i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and all(not t.is_alive() for t in threads)
    for got, want in zip(results, sequential):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_no_global_state_changes(codec24, codec48):
    """Coding leaves torch's backend flags, thread count and RNG as the caller set them."""
    cudnn = torch.backends.cudnn
    flags = (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.get_num_threads())
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    codec24.decode(codec24.encode(speech_like(24_000, 1, 0.3)))
    codec48.decode(codec48.encode(speech_like(48_000, 2, 0.3)[None]))
    assert (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.get_num_threads()) == flags
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert np.array_equal(np.random.get_state()[1], np_before)


def test_default_threads_leave_busy_cpus_alone(monkeypatch):
    """The CLI's default thread count: usable CPUs (affinity, cgroup quota) minus those other work keeps busy."""
    from fastencodec.engine import policy

    assert 1 <= policy.usable_cpus() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(policy, "usable_cpus", lambda: 4)
    for load, want in [(0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (14.5, 1)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert policy.default_threads() == want


def test_lstm_module_survives_pickle_and_copy():
    """The model's LSTM (graph cache, lock, kernel weights) pickles and deep-copies to an equal module."""
    import copy
    import pickle

    from fastencodec.nn.layers import GraphedLSTM

    torch.manual_seed(0)
    lstm = GraphedLSTM(8, 8, 2).eval()
    x = torch.randn(5, 2, 8)
    with torch.inference_mode():
        expected = lstm(x)[0]
        for other in (copy.deepcopy(lstm), pickle.loads(pickle.dumps(lstm))):
            assert torch.equal(other(x)[0], expected)


def test_graph_cache_serves_one_call_at_a_time(monkeypatch):
    """A graph's static buffers serve one call at a time: concurrent calls on a shared model must
    not interleave (else one thread replays with another's input)."""
    pytest.importorskip("triton")
    import threading
    import time

    from fastencodec.kernels.cuda import GraphCache

    inside, most = [0], [0]

    def fn(x):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        inside[0] -= 1
        return x

    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # CPU-only torch lacks it
    cache = GraphCache(fn)
    # new threads run with grad enabled: the cache's eager path, on CPU, behind the same lock
    threads = [threading.Thread(target=cache, args=(torch.zeros(2),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


def test_replay_order_waits_for_the_previous_replays_copies(monkeypatch):
    """Graph replays that share memory wait on the GPU for the previous replay's output copies,
    whatever stream each caller uses (simulated streams and events: the order of operations)."""
    from fastencodec.nn.layers import ReplayOrder

    log = []

    class Event:
        def record(self, stream):
            log.append(("record", stream.name, self))

    class Stream:
        def __init__(self, name):
            self.name = name

        def wait_event(self, event):
            log.append(("wait", self.name, event))

    class Graph:
        def replay(self):
            log.append(("replay",))

    streams = iter([Stream("a"), Stream("b")])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: next(streams))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    order, static_in = ReplayOrder(), (torch.zeros(2),)
    first = order.replay(Graph(), static_in, (torch.ones(2),), lambda: log.append(("copy",)) or static_in[0].clone())
    second = order.replay(Graph(), static_in, (torch.full((2,), 2.0),), lambda: static_in[0].clone())
    assert torch.equal(first, torch.ones(2)) and torch.equal(second, torch.full((2,), 2.0))
    recorded = log[2][2]
    assert [entry[:2] for entry in log] == [("replay",), ("copy",), ("record", "a"), ("wait", "b"), ("replay",),
                                            ("record", "b")]  # fmt: skip
    assert log[3][2] is recorded  # stream b waited for stream a's event
