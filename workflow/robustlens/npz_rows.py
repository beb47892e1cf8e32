"""Rows of one array of a dataset cache (.npz), read from disk on demand.

A prepared dataset is an uncompressed .npz (:func:`robustlens.data.save_dataset`: ``np.savez``
stores every array as a plain .npy member of a zip archive), so the bytes of image ``i`` of
``x_train`` lie at a fixed offset in the file. :class:`NpzRows` finds that offset from the zip
member's local header and the .npy header, and reads the rows a batch needs with positioned
reads: a training job holds one batch of images, never the whole split, and its memory does not
grow with the split (no memory map either: the pages of a map that has been read count towards
the job's resident memory until the kernel reclaims them).

Only numpy: the Snakefile may import this module.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

#: Size of a zip local file header before its name and extra field (APPNOTE 4.3.7).
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"


class NpzRows:
    """Rows of array ``key`` of the uncompressed .npz at ``path``: ``len``, ``shape``,
    ``dtype``, and ``rows[idx]`` for an integer index array (any order, repeats allowed), read
    from disk at each call. Fails with a clear error on a compressed member or a Fortran-ordered
    array (neither is written by :func:`robustlens.data.save_dataset`)."""

    def __init__(self, path: str | os.PathLike, key: str):
        self.path, self.key = Path(path), key
        with zipfile.ZipFile(self.path) as archive:
            try:
                info = archive.getinfo(f"{key}.npy")
            except KeyError:
                names = ", ".join(n.removesuffix(".npy") for n in archive.namelist())
                raise KeyError(f"{self.path} has no array {key!r} (arrays: {names})") from None
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{self.path}: array {key!r} is compressed; rows can only be read from np.savez files")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(member)
                header = member.tell()
        if fortran:
            raise ValueError(f"{self.path}: array {key!r} is Fortran-ordered")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_SIGNATURE:
            raise ValueError(f"{self.path}: no zip local header for {key!r}")
        name_length, extra_length = fields[9], fields[10]
        self.offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + header
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __getitem__(self, idx) -> np.ndarray:
        """Rows ``idx`` (an integer array, or a slice) as a new array, in ``idx``'s order."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError("NpzRows takes a one-dimensional index array")
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows of {self.key!r}")
        idx = idx % max(len(self), 1)
        wanted, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(wanted), *self.shape[1:]), dtype=self.dtype)
        if not len(wanted):
            return out
        flat = out.reshape(len(wanted), -1).view(np.uint8).reshape(len(wanted), self.row_bytes)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            start = 0
            while start < len(wanted):  # one read per run of consecutive rows
                stop = start + 1
                while stop < len(wanted) and wanted[stop] == wanted[stop - 1] + 1:
                    stop += 1
                size = (stop - start) * self.row_bytes
                data = os.pread(fd, size, self.offset + int(wanted[start]) * self.row_bytes)
                if len(data) != size:
                    raise OSError(f"{self.path}: short read of rows {wanted[start]}..{wanted[stop - 1]} of {self.key!r}")
                flat[start:stop] = np.frombuffer(data, dtype=np.uint8).reshape(stop - start, self.row_bytes)
                start = stop
        finally:
            os.close(fd)
        return out[inverse]

