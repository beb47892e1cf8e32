"""Training images read from the dataset cache batch by batch (``training.stream``), as the
device sees them.

:class:`StreamedImages` behaves like a float32 image tensor on the device for the operations
training, validation and feature extraction use (``len``, slices, index arrays), but holds only
a few batches: rows are read from the .npz on disk (:class:`robustlens.npz_rows.NpzRows`),
8-bit values divided by 255 on the device. Given an epoch's batch order
(:meth:`StreamedImages.read_ahead`, the training loop's ``on_epoch_start``), one background
thread reads the next batches' rows while the device computes, so the step does not wait for
the disk; the values are those of a synchronous read.
"""

from __future__ import annotations

import collections
import queue
import threading
import weakref
from concurrent.futures import Future, wait

import numpy as np
import torch

from robustlens.augment import centre_crop


def _reader(rows, work: queue.Queue) -> None:
    """The read-ahead thread: reads ``rows[positions]`` for each (future, positions) put on
    ``work``, in order, until it gets None. Holds no reference to its StreamedImages, so an
    unreferenced one is collected (and its finaliser stops this thread)."""
    while True:
        item = work.get()
        if item is None:
            return
        future, positions = item
        if not future.set_running_or_notify_cancel():
            continue  # discarded before it started
        try:
            future.set_result(rows[positions])
        except BaseException as error:  # re-raised in the caller by future.result()
            future.set_exception(error)
        del item, future  # hold no rows between batches


class StreamedImages:
    """Images of a training split as the device sees them, read from the dataset cache per
    batch (``rows``: :class:`robustlens.npz_rows.NpzRows`; ``index``: this split's rows in it,
    e.g. the training or validation part). ``images[idx]`` (a slice, an index array or a CPU
    index tensor) is a float32 tensor in [0, 1] on ``device``: 8-bit rows divided by 255 on the
    device, the same values :func:`robustlens.data.as_float` gives.

    Read-ahead: :meth:`read_ahead` (``order``: an epoch's index batches) starts one daemon
    thread reading the rows of the next ``depth`` batches of ``order``; ``images[idx]`` with
    ``idx`` the next batch of the order takes its rows from there (waiting for them if they are
    not read yet; an error of the read is raised here), any other ``idx`` (validation slices,
    ...) is read at once, as without read-ahead. At most ``depth`` batches are read ahead
    (queued, being read or read and not yet taken), so memory does not grow with the split;
    ``depth`` 0 turns read-ahead off. A new order discards the old one's; :meth:`close` stops
    the thread (also done when the object is collected). Rows are read in the thread, the
    copy to the device and the division by 255 stay in the caller's."""

    def __init__(self, rows, index: np.ndarray, device: torch.device, crop: int | None = None, depth: int = 2):
        self.rows, self.index, self.device = rows, np.asarray(index, dtype=np.int64), torch.device(device)
        self.crop = crop  # the centre crop every batch is cut to (validation of larger stored images)
        if depth < 0:
            raise ValueError(f"read-ahead depth must be >= 0, got {depth}")
        self.depth = int(depth)
        self._ahead: collections.deque = collections.deque()  # (positions, future) in batch order
        self._batches = iter(())  # positions of the order's batches not yet submitted
        self._work: queue.Queue | None = None
        self._stop = None  # finaliser stopping the thread
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.index)

    def read_ahead(self, order) -> None:
        """Read ahead by ``order`` (index batches, as ``images[idx]`` takes them, in the order
        they will be asked for), discarding what was read ahead for a previous order."""
        self._discard()
        if self.depth == 0:
            return
        self._batches = (self._positions(idx) for idx in order)
        self._fill()

    def close(self) -> None:
        """Discard what was read ahead and stop the thread, waiting for it to end (a later
        :meth:`read_ahead` starts another)."""
        self._discard()
        if self._stop is not None:
            self._stop()
            self._thread.join()
            self._stop, self._work, self._thread = None, None, None

    def __getitem__(self, idx) -> torch.Tensor:
        positions = self._positions(idx)
        if self._ahead and np.array_equal(self._ahead[0][0], positions):
            future = self._ahead.popleft()[1]
            try:
                rows = future.result()
            except BaseException:
                self._discard()  # the order is abandoned by whoever handles the error
                raise
            finally:
                del future
            self._fill()
        else:
            rows = self.rows[positions]
        batch = torch.from_numpy(rows).to(self.device)
        return centre_crop(batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch, self.crop)

    def _positions(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            return self.index[idx]
        return self.index[np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)]

    def _fill(self) -> None:
        """Submit batches of the order until ``depth`` are read ahead."""
        while len(self._ahead) < self.depth:
            positions = next(self._batches, None)
            if positions is None:
                return
            if self._work is None:
                self._work = queue.Queue()
                self._thread = threading.Thread(target=_reader, args=(self.rows, self._work),
                                                name="StreamedImages.read_ahead", daemon=True)
                self._thread.start()
                self._stop = weakref.finalize(self, self._work.put, None)
            future: Future = Future()
            self._ahead.append((positions, future))
            self._work.put((future, positions))

    def _discard(self) -> None:
        """Drop what was read ahead: cancel reads not started, wait for one being read (so no
        more than ``depth`` batches are ever held), ignore their errors."""
        self._batches = iter(())
        running = [future for _, future in self._ahead if not future.cancel()]
        self._ahead.clear()
        wait(running)
