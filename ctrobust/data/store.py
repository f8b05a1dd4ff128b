"""The prepared-slice format: one HDF5 file of windowed CT slices in [0, 1], split by patient.

Layout (see ``docs/data.md`` for every field)::

    /                     attrs: format="ctrobust-slices", format_version=1, ctrobust_version,
                                 source, image_size, n_train, n_val, n_test, value_range, ... (no paths)
    /{train,val,test}/images         float32 (n, N, N)   intensities in [0, 1]
    /{train,val,test}/patient        |S16    (n,)        pseudonymous patient key
    /{train,val,test}/series         |S16    (n,)        pseudonymous series key
    /{train,val,test}/position       float64 (n,)        slice position along the slice normal, mm (NaN: unknown)
    /{train,val,test}/pixel_spacing  float32 (n,)        output pixel size, mm (NaN: unknown)

Every split group exists, possibly empty. Files are written atomically: to a temporary file in the
output's folder (``.NAME.PID.XXXXXXXX.tmp``), renamed over the output name only when complete; a
temporary file left by a killed writer (its process no longer runs) is removed by the next write of the
same output. Written files get the mode an ordinary new file gets (``0o666`` less the umask) unless a
``mode`` is given.

Reading validates at open time (:class:`SliceDataset`): the images must be a float dataset
``(n, N, N)`` of the file's ``image_size``, the per-slice fields must have ``n`` rows, and a sample of the
slices must be finite and within [0, 1]; every slice read later is checked the same way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ctrobust.errors import CtrobustError
from ctrobust.files import atomic_path, default_file_mode, new_temporary, remove_stale_temporaries  # noqa: F401

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPLITS",
    "KEY_LENGTH",
    "SliceWriter",
    "SliceDataset",
    "atomic_output",
    "open_dataset",
    "describe",
    "check_writable",
    "remove_stale_temporaries",
    "new_temporary",
    "default_file_mode",
    "DataValidationError",
]

FORMAT = "ctrobust-slices"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
KEY_LENGTH = 16  # characters of a pseudonymous key (hex digits of an HMAC: 64 bits)
_CHUNK_ROWS = 64  # rows of the 1-D per-slice fields per HDF5 chunk
_CHECK_SLICES = 32  # slices checked (finite, in [0, 1]) when a split is opened; every slice is checked on read
_RANGE_TOLERANCE = 1e-6  # intensities may exceed [0, 1] by this much (float32 rounding)


class DataValidationError(CtrobustError):
    """A prepared-slice file whose contents break the format (dtype, range, shapes); the message names
    the file, the dataset and the problem."""


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output unless ``force``; create a missing parent folder.

    Returns the output path as a ``Path``. Raises ``CtrobustError`` with a message that says what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise CtrobustError(f"output {path} is a folder; give a file name such as {path / 'dataset.h5'}")
    if path.exists() and not force:
        raise CtrobustError(f"output {path} already exists; pass force=True to overwrite it")
    if path.parent.exists() and not path.parent.is_dir():
        raise CtrobustError(f"the folder of output {path} is a file: {path.parent}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def atomic_output(path: str | os.PathLike, force: bool = False, suffix: str = ".tmp",
                  mode: int | None = None):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block completes.

    :func:`ctrobust.files.atomic_path` after :func:`check_writable`: an existing ``path`` is refused unless
    ``force`` (also when it appears while the block runs); any exception deletes the temporary file and
    leaves an existing ``path`` untouched; stale temporary files of killed runs are removed first.
    """
    path = check_writable(path, force)

    def still_free():
        if path.exists() and not force:  # appeared while we worked
            raise CtrobustError(f"output {path} appeared while writing; pass force=True to overwrite it")

    return atomic_path(path, suffix=suffix, mode=mode, before_replace=still_free)


def _key_array(keys) -> np.ndarray:
    out = np.asarray([str(k).encode("ascii")[:KEY_LENGTH] for k in keys], dtype=f"S{KEY_LENGTH}")
    return out.reshape(-1)


class SliceWriter:
    """Append slices split by split into an open HDF5 file in the prepared-slice format.

    Parameters
    ----------
    h5file : h5py.File
        A file opened for writing (normally the temporary path of :func:`atomic_output`).
    image_size : int
        N, the side of every slice in pixels.
    compression : str or None
        HDF5 filter for the images (``None``, ``"gzip"`` or ``"lzf"``); ``None`` reads fastest.

    Slices are appended with :meth:`append`; :meth:`finish` writes the counts and the file attributes.
    """

    def __init__(self, h5file, image_size: int, compression: str | None = None):
        self.file = h5file
        self.image_size = int(image_size)
        n = self.image_size
        self.counts = {s: 0 for s in SPLITS}
        for split in SPLITS:
            g = h5file.create_group(split)
            g.create_dataset("images", shape=(0, n, n), maxshape=(None, n, n), dtype="float32",
                             chunks=(1, n, n), compression=compression)
            g.create_dataset("patient", shape=(0,), maxshape=(None,), dtype=f"S{KEY_LENGTH}", chunks=(_CHUNK_ROWS,))
            g.create_dataset("series", shape=(0,), maxshape=(None,), dtype=f"S{KEY_LENGTH}", chunks=(_CHUNK_ROWS,))
            g.create_dataset("position", shape=(0,), maxshape=(None,), dtype="float64", chunks=(_CHUNK_ROWS,))
            g.create_dataset("pixel_spacing", shape=(0,), maxshape=(None,), dtype="float32", chunks=(_CHUNK_ROWS,))
            g["images"].attrs["units"] = "windowed intensity in [0, 1]"
            g["position"].attrs["units"] = "mm along the slice normal (NaN: unknown)"
            g["pixel_spacing"].attrs["units"] = "mm per output pixel (NaN: unknown)"

    def append(self, split: str, images, patient, series, position=None, pixel_spacing=None) -> None:
        """Append ``k`` slices to ``split``.

        Parameters
        ----------
        images : array (k, N, N) or (N, N)
            Intensities in [0, 1]; stored as float32.
        patient, series : sequence of k str
            Pseudonymous keys (ASCII, at most 16 characters; never raw identifiers).
        position : sequence of k float, optional
            Slice positions in mm (NaN when unknown, the default).
        pixel_spacing : sequence of k float, optional
            Output pixel size in mm (NaN when unknown, the default).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        n = self.image_size
        if images.shape[1:] != (n, n):
            raise ValueError(f"expected images (k, {n}, {n}), got {images.shape}")
        k = images.shape[0]
        if k == 0:
            return
        patient = _key_array(patient if not isinstance(patient, str) else [patient] * k)
        series = _key_array(series if not isinstance(series, str) else [series] * k)
        position = np.full(k, np.nan) if position is None else np.asarray(position, dtype=np.float64).reshape(-1)
        pixel_spacing = (np.full(k, np.nan, dtype=np.float32) if pixel_spacing is None
                         else np.asarray(pixel_spacing, dtype=np.float32).reshape(-1))
        for name, arr in (("patient", patient), ("series", series), ("position", position),
                          ("pixel_spacing", pixel_spacing)):
            if arr.shape != (k,):
                raise ValueError(f"{name}: expected {k} values, got shape {arr.shape}")
        g = self.file[split]
        start = self.counts[split]
        for name, arr in (("images", images), ("patient", patient), ("series", series),
                          ("position", position), ("pixel_spacing", pixel_spacing)):
            ds = g[name]
            ds.resize(start + k, axis=0)
            ds[start:start + k] = arr
        self.counts[split] = start + k

    def finish(self, attrs: Mapping[str, object] | None = None) -> dict:
        """Write the split counts and the file attributes; returns the counts per split."""
        from ctrobust import __version__

        root = self.file.attrs
        root["format"] = FORMAT
        root["format_version"] = FORMAT_VERSION
        root["ctrobust_version"] = __version__
        root["image_size"] = self.image_size
        root["value_range"] = np.array([0.0, 1.0])
        for split in SPLITS:
            g = self.file[split]
            root[f"n_{split}"] = self.counts[split]
            g.attrs["n_images"] = self.counts[split]
            g.attrs["n_patients"] = len(np.unique(g["patient"][:])) if self.counts[split] else 0
            g.attrs["n_series"] = len(np.unique(g["series"][:])) if self.counts[split] else 0
        for key, value in (attrs or {}).items():
            root[key] = "" if value is None else value
        return dict(self.counts)


def _open_h5(path: str | os.PathLike):
    """Open a prepared-slice file read-only, with clear errors for the usual mistakes."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise CtrobustError(f"dataset {path} does not exist; make one with `ctrobust make-phantoms` or "
                            "`ctrobust prepare-dicom`, or omit --data to use built-in phantoms")
    if path.is_dir():
        raise CtrobustError(f"dataset {path} is a folder; give the .h5 file written by prepare-dicom/make-phantoms")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CtrobustError(f"{path} is not an HDF5 file ({exc}); give a file written by "
                            "`ctrobust prepare-dicom` or `ctrobust make-phantoms`") from None
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        f.close()
        raise CtrobustError(f"{path} is an HDF5 file but not a ctrobust prepared-slice file (format attribute "
                            f"{fmt!r}, expected {FORMAT!r}); convert it with prepare-dicom, make-phantoms or "
                            "a data_prep/ converter")
    version = int(f.attrs.get("format_version", -1))
    if version > FORMAT_VERSION:
        f.close()
        raise CtrobustError(f"{path} has format version {version}; this ctrobust reads up to {FORMAT_VERSION}: upgrade ctrobust")
    return f


_RANGE_HINT = ("the prepared-slice format stores intensities in [0, 1]: rescale the data (8-bit pixels: divide "
               "by 255; HU: window them, as prepare-dicom does)")


def _check_slice(where: str, index: int, image: np.ndarray) -> None:
    """Refuse a slice with NaN/Inf or values outside [0, 1] (:class:`DataValidationError` naming it)."""
    image = np.asarray(image)
    bad = image.size - int(np.count_nonzero(np.isfinite(image)))
    if bad:
        raise DataValidationError(f"{where}[{index}] contains {bad} NaN or infinite value(s); "
                                  "every intensity must be a finite number in [0, 1]")
    if image.size:
        lo, hi = float(image.min()), float(image.max())
        if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
            raise DataValidationError(f"{where}[{index}] has values from {lo:g} to {hi:g}, outside [0, 1]; "
                                      + _RANGE_HINT)


def _validate_split(path: Path, f, split: str) -> None:
    """What :class:`SliceDataset` checks at open time (see the module docstring)."""
    g = f[split]
    images = g["images"]
    where = f"{path}: /{split}/images"
    if images.dtype.kind != "f":
        raise DataValidationError(f"{where} has dtype {images.dtype}; the prepared-slice format stores float32 "
                                  f"intensities in [0, 1] ({_RANGE_HINT.split(': ', 1)[1]})")
    n, size = int(images.shape[0]), int(images.shape[1])
    declared = f.attrs.get("image_size")
    if declared is not None and int(np.asarray(declared).reshape(-1)[0]) != size:
        raise DataValidationError(f"{where} holds {size} x {size} slices but the file's image_size is "
                                  f"{int(np.asarray(declared).reshape(-1)[0])}; every split must have that size")
    for other in SPLITS:
        if other != split and other in f and "images" in f[other] and f[other]["images"].ndim == 3:
            if tuple(f[other]["images"].shape[1:]) != tuple(images.shape[1:]):
                raise DataValidationError(f"{where} holds {size} x {size} slices but /{other}/images holds "
                                          f"{f[other]['images'].shape[1]} x {f[other]['images'].shape[2]}; "
                                          "every split must have the same image size")
    for name in ("patient", "series", "position", "pixel_spacing"):
        if name in g and tuple(g[name].shape[:1]) != (n,):
            raise DataValidationError(f"{path}: /{split}/{name} has {g[name].shape[0] if g[name].shape else 0} "
                                      f"rows but /{split}/images has {n} slices")
    if n:
        rows = np.unique(np.linspace(0, n - 1, min(n, _CHECK_SLICES)).round().astype(int))
        for i in rows:
            _check_slice(where, int(i), images[int(i)])


class SliceDataset:
    """A lazy ``torch.utils.data.Dataset`` over one split of a prepared-slice file.

    Item ``i`` is a float32 tensor ``(1, N, N)`` with intensities in [0, 1]. The HDF5 file is opened on
    first access in each process (and reopened after a fork), so the dataset is safe to use with
    ``DataLoader(num_workers > 0)``; the constructor reads the metadata and checks the split (dtype,
    image size against the file's ``image_size`` and the other splits, row counts, and up to 32 evenly
    spaced slices finite and in [0, 1]); each item is checked again when read. A violation raises
    :class:`DataValidationError` naming the file, the dataset and the problem.

    Attributes
    ----------
    path : Path
    split : str
    image_size : int
        N.
    patients : numpy array of str (n,)
        Pseudonymous patient key of each slice.
    positions : numpy float64 (n,)
        Slice positions in mm (NaN when unknown).
    attrs : dict
        The file attributes.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        self._file = None
        self._pid = None
        self.path = Path(path)
        self.split = split
        with _open_h5(self.path) as f:
            if split not in f or "images" not in f[split]:
                import h5py

                available = [s for s in f.keys() if isinstance(f[s], h5py.Group) and "images" in f[s]]
                raise CtrobustError(f"{self.path} has no split {split!r}; available splits: {sorted(available)}")
            images = f[split]["images"]
            if images.ndim != 3 or images.shape[1] != images.shape[2]:
                raise CtrobustError(f"{self.path}: /{split}/images has shape {images.shape}, "
                                    "expected (n, N, N)")
            _validate_split(self.path, f, split)
            self._len = int(images.shape[0])
            self.image_size = int(images.shape[1])
            self.patients = np.char.decode(f[split]["patient"][:], "ascii") if "patient" in f[split] else None
            self.positions = f[split]["position"][:] if "position" in f[split] else None
            self.attrs = {k: _plain(v) for k, v in f.attrs.items()}

    def __len__(self) -> int:
        return self._len

    def _images(self):
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.split]["images"]

    def __getitem__(self, index):
        import torch

        if isinstance(index, slice) or not np.isscalar(index):
            raise TypeError("index a SliceDataset with one integer; use a DataLoader for batches")
        i = int(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {index} out of range for {self._len} slices")
        arr = np.asarray(self._images()[i], dtype=np.float32)
        _check_slice(f"{self.path}: /{self.split}/images", i, arr)
        return torch.from_numpy(arr)[None]

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                self._file.close()
        self._file = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self):
        self.close()

    def __repr__(self) -> str:
        n = self.image_size
        return f"SliceDataset({str(self.path)!r}, split={self.split!r})  # {self._len} slices of {n}x{n}"


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_dataset(path: str | os.PathLike, split: str = "train", *, allow_empty: bool = False) -> SliceDataset:
    """Open one split of a prepared-slice HDF5 file as a lazy torch Dataset of ``(1, N, N)`` float32 tensors.

    Parameters
    ----------
    path : path-like
        A file written by ``ctrobust prepare-dicom``, ``ctrobust make-phantoms`` or a ``data_prep/`` converter.
    split : {"train", "val", "test"}
    allow_empty : bool
        Return an empty dataset for a split with no slices instead of raising.

    Raises
    ------
    CtrobustError
        For a missing file, a non-HDF5 or non-ctrobust file, a missing split or (unless ``allow_empty``)
        an empty split.
    """
    ds = SliceDataset(path, split)
    if len(ds) == 0 and not allow_empty:
        raise CtrobustError(f"split {split!r} of {path} is empty (0 slices); prepare the data with more patients "
                            "or a larger --val-fraction/--test-fraction")
    return ds


def describe(path: str | os.PathLike) -> dict:
    """Summarise a prepared-slice file: its attributes and, per split, slices, patients and series.

    Returns
    -------
    dict
        ``{"path", "format", "format_version", "image_size", "attrs": {...},
        "splits": {split: {"n_images", "n_patients", "n_series", "shape"}}, "bytes"}``.
    """
    path = Path(path)
    with _open_h5(path) as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        splits = {}
        for split in SPLITS:
            if split not in f:
                continue
            g = f[split]
            n = int(g["images"].shape[0])
            splits[split] = {
                "n_images": n,
                "n_patients": int(len(np.unique(g["patient"][:]))) if n and "patient" in g else 0,
                "n_series": int(len(np.unique(g["series"][:]))) if n and "series" in g else 0,
                "shape": list(g["images"].shape),
            }
    return {
        "path": str(path),
        "format": attrs.get("format"),
        "format_version": attrs.get("format_version"),
        "image_size": attrs.get("image_size"),
        "attrs": attrs,
        "splits": splits,
        "bytes": path.stat().st_size,
    }
