"""Does reading the next batches ahead (StreamedImages.read_ahead) hide the disk from a streamed
training step?

One epoch of training steps (torchvision ResNet-18, 100 classes, batch 64 of 3 x 112 x 112 uint8
images from an uncompressed dataset cache; torch on one thread, as a GPU job leaves the CPU to
the data) with the batches from:

- ``in memory``: the whole split as one uint8 tensor (the lower bound: no reads at all);
- ``stream, depth 0``: robustlens' streamed split without read-ahead (read, then step);
- ``stream, depth 2``: the same with read-ahead (what training uses);
- ``DataLoader, 1 worker``: the plain alternative a user would write: a torch ``DataLoader``
  over a map-style dataset of the cache's rows (one worker process, batch sampler, prefetch 2).

Each on two storages: the local disk with the file's pages dropped from the page cache before
every epoch (``posix_fadvise DONTNEED``: cold reads), and a network file system modelled as a
read that takes ``bytes / BANDWIDTH`` seconds (a sleep that releases the GIL, as real I/O does),
with BANDWIDTH set so that reading one batch takes as long as one step here (at paper scale a
GPU step of ResNet-50 on 256 images at 224 px takes about 0.25 s, and reading its 38 MB from a
150 MB/s network file system as long). Prints the epoch time, the time steps waited for data and
the ratio to ``stream, depth 0`` measured in the same run.
Run: .venv/bin/python benchmarks/read_ahead.py
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from robustlens.data import save_dataset  # noqa: E402
from robustlens.fitting import batch_order  # noqa: E402
from robustlens.npz_rows import NpzRows  # noqa: E402
from robustlens.runtime import configure_torch, generator  # noqa: E402
from robustlens.streaming import StreamedImages  # noqa: E402

N, SIZE, BATCH = 640, 112, 64
CPU = torch.device("cpu")


class ModelledStorage:
    """Rows read from ``rows`` that take ``nbytes / bandwidth`` seconds, like a network file
    system of that bandwidth."""

    def __init__(self, rows: NpzRows, bandwidth: float):
        self.rows, self.bandwidth = rows, bandwidth

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, positions):
        out = self.rows[positions]
        time.sleep(out.nbytes / self.bandwidth)
        return out


class RowsDataset(torch.utils.data.Dataset):
    """The plain baseline's dataset: rows of the cache, fetched a batch at a time."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, positions):
        return torch.from_numpy(self.rows[np.asarray(positions)])


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def epoch(model, opt, batches, y, order) -> tuple[float, float]:
    """One epoch of steps on ``batches`` (an iterator of uint8 batches in ``order``): seconds in
    all and seconds spent waiting for the next batch."""
    waited, start = 0.0, time.perf_counter()
    for idx in order:
        t = time.perf_counter()
        xb = next(batches)
        xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb
        waited += time.perf_counter() - t
        loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, waited


def main() -> None:
    configure_torch(1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8)
    y = torch.from_numpy(rng.integers(0, 100, N))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.npz"
        save_dataset({"x_train": x, "y_train": y.numpy()}, path)
        rows = NpzRows(path, "x_train")
        model = torchvision.models.resnet18(num_classes=100)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        order = batch_order(N, BATCH, generator(0))

        # one warm-up epoch in memory; its step time sets the modelled bandwidth
        seconds, _ = epoch(model, opt, (torch.from_numpy(x[idx.numpy()]) for idx in order), y, order)
        step = seconds / len(order)
        bandwidth = BATCH * rows.row_bytes / step
        print(f"{N} images of 3x{SIZE}x{SIZE} uint8 ({rows.nbytes / 1e6:.0f} MB), batch {BATCH}: "
              f"{len(order)} steps of {step:.2f} s; modelled network storage {bandwidth / 1e6:.0f} MB/s "
              f"(a batch of {BATCH * rows.row_bytes / 1e6:.1f} MB in one step's time)")

        def streamed(storage, depth):
            images = StreamedImages(storage, np.arange(N), CPU, depth=depth)
            images.read_ahead(order)
            try:
                return (images[idx] for idx in order), images.close
            except BaseException:
                images.close()
                raise

        def dataloader(storage, _):
            loader = torch.utils.data.DataLoader(RowsDataset(storage), batch_size=None, sampler=[idx.numpy() for idx in order],
                                                 num_workers=1, prefetch_factor=2)
            return iter(loader), lambda: None

        def in_memory(_, __):
            whole = torch.from_numpy(x)
            return (whole[idx] for idx in order), lambda: None

        variants = [("in memory", in_memory, None), ("stream, depth 0", streamed, 0),
                    ("stream, depth 2", streamed, 2), ("DataLoader, 1 worker", dataloader, None)]
        storages = [("local disk, cold page cache", rows), ("modelled network storage", ModelledStorage(rows, bandwidth))]
        print(f"{'storage':30s} {'batches from':22s} {'epoch s':>8s} {'waited s':>9s} {'depth 0 / this':>15s}")
        for storage_name, storage in storages:
            times = {}
            for name, make, depth in variants:
                drop_page_cache(path)
                batches, close = make(storage, depth)
                try:
                    times[name] = epoch(model, opt, batches, y, order)
                finally:
                    close()
            for name, (seconds, waited) in times.items():
                ratio = times["stream, depth 0"][0] / seconds
                print(f"{storage_name:30s} {name:22s} {seconds:8.2f} {waited:9.2f} {ratio:15.2f}")


if __name__ == "__main__":
    main()
