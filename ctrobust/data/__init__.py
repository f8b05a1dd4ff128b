"""Data: prepared CT slices (HDF5), built-in phantoms, DICOM and NIfTI preparation with quality control.

Every dataset yields float32 tensors ``(1, N, N)`` with intensities in [0, 1] and has ``.image_size``
(N). Names are imported lazily so ``import ctrobust.data`` stays cheap.

- :func:`load_split` is what every ``--data`` option uses: built-in phantoms when no file is given,
  else one split of a prepared-slice file.
- :func:`open_dataset`, :func:`describe`: the prepared-slice format (``ctrobust.data.store``).
- :func:`prepare_dicom`: DICOM folders to a prepared-slice file (``ctrobust.data.dicom``), with QC
  (``ctrobust.data.qc``).
- :func:`prepare_volumes`: NIfTI volumes to a prepared-slice file (``ctrobust.data.volumes``);
  :func:`write_slices`: plain arrays to one, with the same patient splits and pseudonyms.
- :func:`make_phantoms`: phantoms to a prepared-slice file.
- :func:`real_ct_slices`: the real CT slices available offline (pydicom's test files), the reserved
  ``--data real`` (an evaluation set of a handful of slices, not a training set).
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr
import os

__all__ = [
    "load_split",
    "make_phantoms",
    "open_dataset",
    "describe",
    "prepare_dicom",
    "prepare_volumes",
    "write_slices",
    "PhantomDataset",
    "SliceDataset",
    "random_ellipses",
    "shepp_logan",
    "load_image_set",
    "DEFAULT_COUNTS",
    "real_ct_slices",
    "real_ct_files",
    "RealSliceDataset",
    "REAL_DATA_NAME",
]

_EXPORTS = {
    "open_dataset": "ctrobust.data.store",
    "describe": "ctrobust.data.store",
    "SliceDataset": "ctrobust.data.store",
    "PhantomDataset": "ctrobust.data.phantoms",
    "random_ellipses": "ctrobust.data.phantoms",
    "shepp_logan": "ctrobust.data.phantoms",
    "DEFAULT_COUNTS": "ctrobust.data.phantoms",
    "prepare_dicom": "ctrobust.data.prepare",
    "prepare_volumes": "ctrobust.data.volumes",
    "write_slices": "ctrobust.data.prepare",
    "make_phantoms": "ctrobust.data.make",
    "load_image_set": "ctrobust.data.images",
    "real_ct_slices": "ctrobust.data.real",
    "real_ct_files": "ctrobust.data.real",
    "RealSliceDataset": "ctrobust.data.real",
    "REAL_DATA_NAME": "ctrobust.data.real",
}


#: modules reachable as attributes on first use
SUBMODULES = ('dicom', 'images', 'lodopab', 'make', 'phantoms', 'prepare', 'qc', 'real', 'store', 'volumes')
__getattr__ = lazy_getattr("ctrobust.data", _EXPORTS, globals(), SUBMODULES)


def __dir__():
    return sorted(set(__all__) | set(globals()))


def load_split(data: str | os.PathLike | None = None, split: str = "train", *, size: int = 128,
               n_phantoms: int | None = None, seed: int = 0, allow_empty: bool = False):
    """The dataset behind every command's ``--data`` option.

    Parameters
    ----------
    data : path-like or None
        A prepared-slice HDF5 file, None for built-in random phantoms, or ``"real"`` for the real CT
        slices available offline (:func:`real_ct_slices` at ``size``; every split is the same handful of
        slices, an evaluation set; a file named ``real`` is given as ``./real``).
    split : {"train", "val", "test"}
    size : int
        N, the phantom image side in pixels. Ignored for a file: its own size is ``.image_size``.
    n_phantoms : int or None
        Number of phantoms (None: 256 train / 32 val / 32 test). Ignored for a file.
    seed : int
        Base seed of the phantoms; each split draws from its own derived seed (``phantoms.split_seed``),
        so train, val and test never share a phantom. Ignored for a file.
    allow_empty : bool
        Accept an empty split of a file (e.g. no validation patients) instead of raising.

    Returns
    -------
    torch.utils.data.Dataset
        Items float32 ``(1, N, N)`` in [0, 1]; attribute ``.image_size`` = N.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    source = DATA_SOURCES.get(data) if data is None or isinstance(data, str) else None
    return (source or _prepared_file)(data, split, size=size, n_phantoms=n_phantoms, seed=seed,
                                      allow_empty=allow_empty)


def _phantoms(data, split, *, size, n_phantoms, seed, allow_empty):
    from ctrobust.data.phantoms import DEFAULT_COUNTS, PhantomDataset, split_seed

    n = DEFAULT_COUNTS[split] if n_phantoms is None else int(n_phantoms)
    return PhantomDataset(n, size, split_seed(seed, split))


def _real_slices(data, split, *, size, n_phantoms, seed, allow_empty):
    from ctrobust.data.real import RealSliceDataset

    return RealSliceDataset(size)


def _prepared_file(data, split, *, size, n_phantoms, seed, allow_empty):
    from ctrobust.data.store import open_dataset

    return open_dataset(data, split, allow_empty=allow_empty)


#: the reserved ``--data`` values -> their loader ``(data, split, *, size, n_phantoms, seed, allow_empty)``;
#: any other value is a prepared-slice file
DATA_SOURCES = {None: _phantoms, "real": _real_slices}
