"""Read-ahead of streamed training batches (StreamedImages.read_ahead): the batches of
synchronous reads, in order, with at most ``depth`` read ahead, errors raised in the caller and
no thread left behind."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch

from robustlens.data import as_float, save_dataset
from robustlens.fitting import batch_order
from robustlens.npz_rows import NpzRows
from robustlens.runtime import generator
from robustlens.streaming import StreamedImages

THREAD = "StreamedImages.read_ahead"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    x = np.random.default_rng(0).integers(0, 256, (103, 3, 4, 5), dtype=np.uint8)
    path = tmp_path_factory.mktemp("stream") / "d.npz"
    save_dataset({"x_train": x, "y_train": np.zeros(len(x), np.int64)}, path)
    return path, x


class Recorded:
    """Rows that record which thread read each batch (positions as a tuple)."""

    def __init__(self, rows):
        self.rows, self.reads = rows, []

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, positions):
        self.reads.append((threading.current_thread().name, tuple(np.asarray(positions).tolist())))
        return self.rows[positions]


def in_time(fn, seconds: float = 20.0):
    """fn() in a daemon thread: its result, or its exception raised here; fails instead of
    hanging the test run when it does not return within ``seconds``."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            out["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no answer within {seconds} s (a read-ahead that never delivers)"
    if "error" in out:
        raise out["error"]
    return out["value"]


def reader_threads():
    return [t for t in threading.enumerate() if t.name == THREAD]


def test_read_ahead_gives_the_batches_of_synchronous_reads_over_two_epochs(cache):
    """Two epochs of a seeded order (89 rows in batches of 16: a last batch of 9), read ahead
    at depths 1, 2 and 5: every batch equal to a synchronous read, and every training batch
    was read by the read-ahead thread (the read-ahead was used, not bypassed)."""
    path, x = cache
    index = np.random.default_rng(1).permutation(len(x))[:89]  # a split's rows, out of order
    plain = StreamedImages(NpzRows(path, "x_train"), index, CPU, depth=0)
    for depth in (1, 2, 5):
        rows = Recorded(NpzRows(path, "x_train"))
        images = StreamedImages(rows, index, CPU, depth=depth)
        gen = generator(7)
        for epoch in range(2):
            order = batch_order(len(index), 16, gen)
            assert len(order[-1]) == 9
            images.read_ahead(order)
            for idx in order:
                got = in_time(lambda: images[idx])
                assert torch.equal(got, plain[idx])
                assert torch.equal(got, torch.from_numpy(as_float(x[index[idx.numpy()]])))
            training = [tuple(index[idx.numpy()].tolist()) for idx in order]
            assert [r for r in rows.reads if r[1] in training] == [(THREAD, b) for b in training], f"depth {depth}, epoch {epoch}"
            rows.reads.clear()
        images.close()


def test_validation_reads_in_between_read_at_once_and_keep_the_order(cache):
    """Slices and other index arrays asked for in the middle of an epoch (validation,
    feature extraction) are read at once with their own values; the training batches after
    them are still the read-ahead ones, in order."""
    path, x = cache
    index = np.arange(len(x))[::-1].copy()
    rows = Recorded(NpzRows(path, "x_train"))
    images = StreamedImages(rows, index, CPU, depth=2)
    order = batch_order(len(index), 10, generator(3))
    images.read_ahead(order)
    for step, idx in enumerate(order):
        if step % 3 == 1:
            for other in (slice(0, 7), slice(20, 30), slice(50, None), np.array([5, 5, 0]), order[-1]):
                got = images[other]
                want = index[other] if isinstance(other, slice) else index[np.asarray(other)]
                assert torch.equal(got, torch.from_numpy(as_float(x[want]))), (step, other)
        got = in_time(lambda: images[idx])
        assert torch.equal(got, torch.from_numpy(as_float(x[index[idx.numpy()]]))), step
    threads = [name for name, positions in rows.reads if positions != tuple(index[order[-1].numpy()].tolist())]
    assert threads.count(THREAD) == len(order) - 1  # the last batch was also asked for early, out of turn
    images.close()


def test_a_new_order_discards_the_old_one(cache):
    """An epoch abandoned half-way (an error in a step, a resumed fit): the next order's
    batches are read ahead and right, none of the old order's is handed out."""
    path, x = cache
    rows = Recorded(NpzRows(path, "x_train"))
    images = StreamedImages(rows, np.arange(len(x)), CPU, depth=3)
    gen = generator(11)
    first = batch_order(len(x), 8, gen)
    images.read_ahead(first)
    for idx in first[:4]:
        images[idx]
    second = batch_order(len(x), 8, gen)
    rows.reads.clear()
    images.read_ahead(second)
    for idx in second:
        assert torch.equal(in_time(lambda: images[idx]), torch.from_numpy(as_float(x[idx.numpy()])))
    batches = [tuple(idx.tolist()) for idx in second]
    assert [r for r in rows.reads if r[1] in batches] == [(THREAD, b) for b in batches]
    assert len(rows.reads) <= len(second) + 1  # at most the old order's read under way when it was discarded
    images.close()


class Failing:
    """Rows whose ``fail_at``-th read raises."""

    def __init__(self, rows, fail_at: int):
        self.rows, self.fail_at, self.calls = rows, fail_at, 0

    def __getitem__(self, positions):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("disk on fire")
        return self.rows[positions]


def test_an_error_of_the_reader_is_raised_in_the_caller(cache, tmp_path):
    path, x = cache
    images = StreamedImages(Failing(NpzRows(path, "x_train"), fail_at=3), np.arange(len(x)), CPU, depth=2)
    order = batch_order(len(x), 20, generator(0))
    images.read_ahead(order)
    assert torch.equal(in_time(lambda: images[order[0]]), torch.from_numpy(as_float(x[order[0].numpy()])))
    images[order[1]]
    with pytest.raises(RuntimeError, match="disk on fire"):
        in_time(lambda: images[order[2]])
    # the thread survives an error: a new order is read ahead again
    images.read_ahead(order)
    for idx in order:
        assert torch.equal(in_time(lambda: images[idx]), torch.from_numpy(as_float(x[idx.numpy()])))
    images.close()

    # a real one: the cache truncated under a running job
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(path.read_bytes())
    images = StreamedImages(NpzRows(truncated, "x_train"), np.arange(len(x)), CPU, depth=2)
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    order = [torch.arange(90, 100), torch.arange(0, 10)]
    images.read_ahead(order)
    with pytest.raises(OSError, match="short read"):
        in_time(lambda: images[order[0]])
    images.close()


class Counting:
    """Rows that count the batches read ahead: reads started minus batches the caller has
    asked for (``taken``, raised by the test before each ``images[idx]``)."""

    def __init__(self, rows):
        self.rows, self.started, self.taken, self.most = rows, 0, 0, 0
        self.lock = threading.Lock()

    def __getitem__(self, positions):
        with self.lock:
            self.started += 1
            self.most = max(self.most, self.started - self.taken)
        return self.rows[positions]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_at_most_depth_batches_are_read_ahead(cache, depth):
    """With a step slower than a read, the reader fills the read-ahead to ``depth`` batches
    and never beyond, over two epochs."""
    path, x = cache
    rows = Counting(NpzRows(path, "x_train"))
    images = StreamedImages(rows, np.arange(len(x)), CPU, depth=depth)
    gen = generator(5)
    for _ in range(2):
        order = batch_order(len(x), 12, gen)
        images.read_ahead(order)
        for idx in order:
            with rows.lock:
                rows.taken += 1
            assert torch.equal(in_time(lambda: images[idx]), torch.from_numpy(as_float(x[idx.numpy()])))
            time.sleep(0.02)  # the step: the reader runs ahead as far as it may
    assert rows.started == 2 * len(order)
    assert rows.most == depth
    images.close()


def test_no_reader_thread_outlives_close_or_the_object(cache):
    path, x = cache
    before = len(reader_threads())
    images = StreamedImages(NpzRows(path, "x_train"), np.arange(len(x)), CPU)
    images.read_ahead(batch_order(len(x), 10, generator(0)))
    assert len(reader_threads()) == before + 1
    images.close()
    deadline = time.monotonic() + 10
    while len(reader_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(reader_threads()) == before
    assert torch.equal(images[3:5], torch.from_numpy(as_float(x[3:5])))  # still readable, at once

    images = StreamedImages(NpzRows(path, "x_train"), np.arange(len(x)), CPU)
    order = batch_order(len(x), 10, generator(0))
    images.read_ahead(order)
    images[order[0]]
    thread = next(t for t in reader_threads())
    assert thread.daemon  # a finished job's interpreter does not wait for it
    del images
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_streamed_training_reads_ahead_and_equals_in_memory_training(cache):
    """train_model gives a StreamedImages' read-ahead the fit's batch order: every training
    batch is read by the read-ahead thread, the model is bit for bit the one trained in
    memory, and no thread is left."""
    from robustlens.runtime import configure_torch
    from robustlens.train import train_model

    path, x = cache
    configure_torch(1)
    y = np.random.default_rng(2).integers(0, 3, len(x))
    keep = np.arange(5, len(x))
    kwargs = dict(eps=0.5, norm="l2", epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4,
                  attack_steps=2, seed=4, device=CPU, augment="crop_flip", progress=False)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 5, 3))

    in_memory = model()
    memory_history = train_model(in_memory, as_float(x[keep]), y[keep], **kwargs)
    rows = Recorded(NpzRows(path, "x_train"))
    streamed = model()
    before = len(reader_threads())
    stream_history = train_model(streamed, StreamedImages(rows, keep, CPU), y[keep], **kwargs)
    assert stream_history == memory_history
    for a, b in zip(in_memory.state_dict().values(), streamed.state_dict().values()):
        assert torch.equal(a, b)
    assert len(rows.reads) == 2 * -(-len(keep) // 16)
    assert {name for name, _ in rows.reads} == {THREAD}
    deadline = time.monotonic() + 10
    while len(reader_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(reader_threads()) == before
