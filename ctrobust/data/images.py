"""Natural-image sets for the compressed-sensing experiments.

:func:`load_image_set` returns float32 images ``(k, H, W)`` in [0, 1] (numpy). Built-in sets ship
inside installed packages (nothing is ever downloaded):

- ``"digits"``: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``), 1797 images
  8 x 8 (grey levels 0..16 scaled to [0, 1]);
- ``"faces"``: the 100 face crops of scikit-image's ``data.lfw_subset()`` (25 x 25; its other 100
  images are background patches and are not used).

Sets on the user's disk (``path=``):

- ``"mnist"``: MNIST IDX files (raw or gzip, detected by content). ``path`` is a folder holding the
  standard names (``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, or the
  ``train-images.idx3-ubyte`` spelling) or one IDX image file. Parsed with numpy, magic number and
  sizes validated (:func:`read_idx`).
- ``"celeba"``: a folder of images (e.g. CelebA's ``img_align_celeba``; jpg/jpeg/png/bmp/tif/tiff),
  read with ``skimage.io``, converted to grey, centre-cropped to a square and resized to
  ``size x size`` (default 64). Only the selected files are read.

Splits (``split=``: "train", "val", "test" or "all") are deterministic functions of ``seed`` and are
disjoint for one seed: a permutation by ``numpy.random.default_rng(seed)`` (the global RNG is untouched)
then the first 70 % train, the next 10 % val and the last 20 % test. Exceptions: for an MNIST folder,
"test" is the t10k file and train/val are 90 %/10 % of the training file; for a CelebA folder next
to CelebA's ``list_eval_partition.txt`` (same folder or its parent), that file's partition is used.
"""

from __future__ import annotations

import functools
import gzip
import math
from pathlib import Path

import numpy as np

from ctrobust.errors import CtrobustError

__all__ = ["IMAGE_SETS", "ImageSetError", "load_image_set", "read_idx", "write_idx"]

IMAGE_SETS = ("digits", "faces", "mnist", "celeba")
SPLITS = ("train", "val", "test", "all")
FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_CELEBA_SIZE = 64

# IDX type codes -> big-endian numpy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ImageSetError(CtrobustError, ValueError):
    """Bad image-set name, argument, path or file (the CLI prints it as a user error)."""


# --------------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed, detected by its first bytes) into a numpy array.

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per
    dimension, then the data. Raises :class:`ImageSetError` naming the file for a bad magic
    number, an unknown type, or a size that does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageSetError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ImageSetError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4:
        raise ImageSetError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ImageSetError(
            f"{path}: not an IDX file (magic number 0x{raw[:4].hex()} does not start with two zero bytes)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ImageSetError(f"{path}: unknown IDX data type 0x{code:02x} (magic 0x{raw[:4].hex()})")
    if ndim == 0:
        raise ImageSetError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ImageSetError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ImageSetError(
            f"{path}: IDX header says shape {dims} ({expected} data bytes) but the file has "
            f"{len(raw) - header} data bytes (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip if ``compress`` or the name ends in ``.gz``).

    The inverse of :func:`read_idx` (used by the tests to build small MNIST-like files).
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    key = array.dtype.newbyteorder("=")
    if key not in codes:
        raise ImageSetError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[key], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.dtype(_IDX_TYPES[codes[key]])).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


# --------------------------------------------------------------------------------------------------
# splits and resizing
# --------------------------------------------------------------------------------------------------
def _split_indices(count: int, split: str, seed: int, fractions=FRACTIONS) -> np.ndarray:
    """Indices of ``split`` among ``count`` items: seeded permutation, then contiguous fractions."""
    order = np.random.default_rng(seed).permutation(count)
    if split == "all":
        return np.sort(order)
    n_train = int(round(fractions[0] * count))
    n_val = int(round(fractions[1] * count)) if len(fractions) > 2 else count - n_train
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, count)}
    lo, hi = bounds[split]
    return order[lo:hi]


def _resize(images: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or images.shape[1:] == (size, size):
        return images
    from skimage.transform import resize

    out = np.stack([resize(img, (size, size), order=1, anti_aliasing=True, mode="reflect") for img in images])
    return np.clip(out, 0.0, 1.0)


def _center_crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return img[top : top + side, left : left + side]


def _take(indices: np.ndarray, n: int | None, what: str) -> np.ndarray:
    if n is not None:
        if n > len(indices):
            raise ImageSetError(f"{what}: asked for n = {n} images but the split has only {len(indices)}")
        indices = indices[:n]
    return indices


# --------------------------------------------------------------------------------------------------
# the sets
# --------------------------------------------------------------------------------------------------
def _digits() -> np.ndarray:
    return _digits_cached().copy()


@functools.lru_cache(maxsize=1)
def _digits_cached() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images.astype(np.float64) / 16.0


def _faces() -> np.ndarray:
    return _faces_cached().copy()


@functools.lru_cache(maxsize=1)
def _faces_cached() -> np.ndarray:
    from skimage import data

    images = np.asarray(data.lfw_subset()[:100], dtype=np.float64)
    if images.max() > 1.0:  # documented as uint8 in some versions
        images = images / 255.0
    return images


def _mnist_files(path: Path) -> dict[str, Path]:
    names = {
        "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    }
    found = {}
    for split, stems in names.items():
        for stem in stems:
            for candidate in (path / stem, path / f"{stem}.gz"):
                if candidate.is_file():
                    found.setdefault(split, candidate)
    return found


def _mnist_images(file: Path) -> np.ndarray:
    arr = read_idx(file)
    if arr.ndim != 3:
        raise ImageSetError(
            f"{file}: expected MNIST images (an IDX file with 3 dimensions, magic 0x00000803), "
            f"got shape {arr.shape} (a labels file?)"
        )
    if arr.dtype != np.uint8:
        raise ImageSetError(f"{file}: expected uint8 MNIST pixels, got {arr.dtype}")
    return arr


def _load_mnist(path: Path, split: str, seed: int, n: int | None) -> np.ndarray:
    if path.is_dir():
        files = _mnist_files(path)
        if split == "test":
            if "test" not in files:
                raise ImageSetError(f"no MNIST test images (t10k-images-idx3-ubyte[.gz]) in {path}")
            arr = _mnist_images(files["test"])
            idx = _take(np.arange(len(arr)), n, "mnist test")
            return arr[idx]
        if split == "all":
            parts = [_mnist_images(files[s]) for s in ("train", "test") if s in files]
            if not parts:
                raise ImageSetError(f"no MNIST IDX image files (train-images-idx3-ubyte[.gz]) in {path}")
            arr = np.concatenate(parts)
            return arr[_take(np.arange(len(arr)), n, "mnist all")]
        if "train" not in files:
            raise ImageSetError(f"no MNIST training images (train-images-idx3-ubyte[.gz]) in {path}")
        arr = _mnist_images(files["train"])
        idx = _split_indices(len(arr), split, seed, fractions=(0.9, 0.1))
        return arr[_take(idx, n, f"mnist {split}")]
    arr = _mnist_images(path)
    idx = _split_indices(len(arr), split, seed)
    return arr[_take(idx, n, f"mnist {split}")]


def _celeba_partition(folder: Path) -> dict[str, int] | None:
    for candidate in (folder / "list_eval_partition.txt", folder.parent / "list_eval_partition.txt"):
        if candidate.is_file():
            table = {}
            for line_no, line in enumerate(candidate.read_text().splitlines(), 1):
                parts = line.replace(",", " ").split()
                if len(parts) != 2 or not parts[1].isdigit():
                    if line_no == 1:
                        continue  # a CSV header ("image_id,partition")
                    raise ImageSetError(f"{candidate}:{line_no}: expected '<file> <0|1|2>', got {line!r}")
                table[parts[0]] = int(parts[1])
            return table
    return None


def _load_celeba(path: Path, split: str, seed: int, n: int | None, size: int) -> np.ndarray:
    if not path.is_dir():
        raise ImageSetError(f"celeba: path must be a folder of images, got {path}")
    folder = path
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files and (folder / "img_align_celeba").is_dir():
        folder = folder / "img_align_celeba"
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageSetError(f"celeba: no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    partition = _celeba_partition(folder)
    if partition is not None and split != "all":
        wanted = {"train": 0, "val": 1, "test": 2}[split]
        chosen = [f for f in files if partition.get(f.name) == wanted]
    else:
        chosen = [files[i] for i in _split_indices(len(files), split, seed)]
    chosen = [chosen[i] for i in _take(np.arange(len(chosen)), n, f"celeba {split}")]
    if not chosen:
        raise ImageSetError(f"celeba: the {split!r} split of {path} is empty")

    from skimage import io
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.transform import resize

    out = np.empty((len(chosen), size, size), dtype=np.float32)
    for i, file in enumerate(chosen):
        try:
            img = io.imread(file)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
            raise ImageSetError(f"celeba: cannot read image {file}: {exc}") from None
        img = np.asarray(img)
        if img.dtype.kind in "ui":
            img = img.astype(np.float64) / np.iinfo(img.dtype).max
        img = img.astype(np.float64)
        if img.ndim == 3 and img.shape[-1] == 4:
            img = rgba2rgb(img)
        if img.ndim == 3 and img.shape[-1] == 3:
            img = rgb2gray(img)
        if img.ndim != 2:
            raise ImageSetError(f"celeba: {file} has unsupported shape {img.shape}")
        img = resize(_center_crop(img), (size, size), order=1, anti_aliasing=True, mode="reflect")
        out[i] = np.clip(img, 0.0, 1.0)
    return out


def load_image_set(
    name: str,
    *,
    n: int | None = None,
    size: int | None = None,
    path: str | Path | None = None,
    split: str = "train",
    seed: int = 0,
) -> np.ndarray:
    """Load grey-scale images for compressed sensing: float32 ``(k, H, W)`` in [0, 1].

    Parameters
    ----------
    name : {"digits", "faces", "mnist", "celeba"}
        The set (see the module docstring). "digits" and "faces" ship with scikit-learn /
        scikit-image; "mnist" and "celeba" need ``path``.
    n : int, optional
        Return the first ``n`` images of the split (in its deterministic order); all by default.
        More than the split holds is an error.
    size : int, optional
        Resize to ``size x size`` pixels (bilinear with anti-aliasing). Default: native size
        (8 for digits, 25 for faces, 28 for MNIST), 64 for CelebA (after the centre square crop).
    path : str or Path, optional
        Folder (or MNIST IDX file) on disk, for "mnist" and "celeba".
    split : {"train", "val", "test", "all"}
        Which deterministic part (see the module docstring).
    seed : int
        Seed of the split permutation.

    Returns
    -------
    numpy.ndarray, float32, shape (k, H, W), values in [0, 1]. Flatten row-major
    (``images.reshape(k, -1)``) for CS operators with ``image_shape == (H, W)``.

    Examples
    --------
    >>> x = load_image_set("digits", n=5, split="test")
    >>> x.shape, x.dtype, float(x.min()) >= 0, float(x.max()) <= 1
    ((5, 8, 8), dtype('float32'), True, True)
    """
    if name not in IMAGE_SETS:
        raise ImageSetError(f"unknown image set {name!r}; choose one of {', '.join(IMAGE_SETS)}")
    if split not in SPLITS:
        raise ImageSetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    for label, value in (("n", n), ("size", size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ImageSetError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ImageSetError(f"seed must be a non-negative integer, got {seed!r}")

    if name in ("digits", "faces"):
        if path is not None:
            raise ImageSetError(f"{name!r} ships inside an installed package; do not pass path")
        images = _digits() if name == "digits" else _faces()
        idx = _take(_split_indices(len(images), split, seed), n, f"{name} {split}")
        out = _resize(images[idx], size)
    else:
        if path is None:
            raise ImageSetError(
                f"{name!r} is read from your disk: pass path= (MNIST IDX folder/file or CelebA image folder); "
                f"nothing is downloaded"
            )
        p = Path(path).expanduser()
        if not p.exists():
            raise ImageSetError(f"{name}: path does not exist: {p}")
        if name == "mnist":
            out = _resize(_load_mnist(p, split, seed, n).astype(np.float64) / 255.0, size)
        else:
            out = _load_celeba(p, split, seed, n, DEFAULT_CELEBA_SIZE if size is None else size)
    return np.ascontiguousarray(out, dtype=np.float32)
