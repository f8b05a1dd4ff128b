"""Real CT slices available offline: the CT test files shipped with pydicom (and pydicom-data when installed).

An *evaluation* set of a handful of real patient slices, not a training set: the files are public test
data of the DICOM libraries (different scanners, body parts and fields of view). They go through the same
path as ``ctrobust prepare-dicom`` (:func:`ctrobust.data.dicom.read_ct_file`: stored values -> HU with
RescaleSlope / RescaleIntercept and padding -> air, resampling to ``size x size`` square pixels over the
slice's own field of view, window to [0, 1]). Real training data: the recipes in ``data_prep/``
(LoDoPaB-CT, LIDC-IDRI, Mayo low-dose CT).

Nothing is downloaded: pydicom's own test files are part of the ``pydicom`` wheel; the larger slices of
the ``pydicom-data`` wheel (MIT; ``pip install pydicom-data`` or ``pip install ctrobust[real-ct]``) are
used when that package is installed, and skipped otherwise (``pydicom.data.get_testdata_file(...,
download=False)``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

__all__ = ["REAL_CT_FILES", "RealSlice", "real_ct_files", "real_ct_slices", "RealSliceDataset", "REAL_DATA_NAME"]

#: the reserved ``--data`` name of this set
REAL_DATA_NAME = "real"

#: (file name, package, description); the first two ship with pydicom itself
REAL_CT_FILES = (
    ("CT_small.dcm", "pydicom", "thorax crop, 128 x 128 at 0.66 mm (85 mm field of view), 120 kVp"),
    ("J2K_pixelrep_mismatch.dcm", "pydicom", "head, 512 x 512 at 0.43 mm, JPEG 2000, 120 kVp"),
    ("693_UNCR.dcm", "pydicom-data", "head (CQ500), 512 x 512 at 0.48 mm, 140 kVp"),
    ("explicit_VR-UN.dcm", "pydicom-data", "abdomen (pancreas CT), 512 x 512 at 0.86 mm"),
)


@dataclasses.dataclass(frozen=True)
class RealSlice:
    """One available file: its name, where it lies, the package that ships it and a description."""

    name: str
    path: str
    package: str
    description: str


def real_ct_files() -> list[RealSlice]:
    """The files of :data:`REAL_CT_FILES` present on this machine (never downloads)."""
    import warnings

    from pydicom.data import get_testdata_file

    found = []
    for name, package, description in REAL_CT_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                path = get_testdata_file(name, download=False)
            except Exception:  # noqa: BLE001 - an absent optional package must not break the set
                path = None
        if path:
            found.append(RealSlice(name, str(path), package, description))
    return found


@functools.lru_cache(maxsize=8)
def _slices(size: int, window: tuple[float, float], fov: float | None) -> tuple[np.ndarray, tuple[RealSlice, ...]]:
    from ctrobust.data.dicom import read_ct_file

    images, used = [], []
    for f in real_ct_files():
        result = read_ct_file(f.path, window, size, fov)
        if result.skip is not None:
            raise RuntimeError(f"the real CT slice {f.name} ({f.path}) could not be read: {result.skip}, {result.detail}")
        images.append(result.frames[0].image)
        used.append(f)
    if not images:
        raise RuntimeError("no real CT slices found: pydicom's test files (CT_small.dcm) are missing from this "
                           "installation")
    return np.stack(images)[:, None].astype(np.float32), tuple(used)


def real_ct_slices(size: int = 128, *, window="full", fov: float | None = None,
                   return_files: bool = False):
    """The real CT slices as ``(n, 1, size, size)`` float32 images in [0, 1].

    Parameters
    ----------
    size : int
        Image side in pixels (each slice is resampled over its own field of view, as prepare-dicom does).
    window : str or (level, width)
        HU window mapped to [0, 1] (:data:`ctrobust.data.dicom.WINDOWS` preset or ``"LEVEL,WIDTH"``); the
        default ``full`` ([-1024, 3071] HU) puts water at 0.25, LoDoPaB's scale (docs/conventions.md).
    fov : float, optional
        Field of view in mm for every slice (default: each slice's own).
    return_files : bool
        Also return the :class:`RealSlice` records, in the order of the images.

    Returns
    -------
    torch.Tensor, or (torch.Tensor, list of RealSlice)
        ``n`` is 2 with pydicom alone, 4 with pydicom-data installed.
    """
    from ctrobust.data.dicom import parse_window

    if isinstance(window, str):
        _, level, width = parse_window(window)
    else:
        level, width = (float(v) for v in window)
    images, files = _slices(int(size), (float(level), float(width)), None if fov is None else float(fov))
    out = torch.from_numpy(images.copy())
    return (out, list(files)) if return_files else out


class RealSliceDataset(torch.utils.data.Dataset):
    """The real slices as a dataset: items ``(1, N, N)`` float32 in [0, 1]; ``.image_size``, ``.files``.

    Every split is the same handful of slices: it is an evaluation set (``--data real``), with nothing held out
    (``holds_out`` is False: nothing may be tuned on its validation split).
    """

    holds_out = False

    def __init__(self, size: int = 128, *, window="full", fov: float | None = None):
        self.images, self.files = real_ct_slices(size, window=window, fov=fov, return_files=True)
        self.image_size = int(size)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]
