"""Read one DICOM file into CT slices: classify, decode, convert to HU, window to [0, 1], resample.

:func:`read_ct_file` never raises for a bad file: it returns a :class:`FileResult` whose ``skip`` names
the reason (one of :data:`SKIP_REASONS`). The pipeline over many files (grouping, patient split,
pseudonyms, writing) is :func:`ctrobust.data.prepare.prepare_dicom`.

Header validation: every header value the slice is built from is checked before it is used. A value that
is present but malformed -- the wrong number of values (PixelSpacing with one value, SamplesPerPixel
``[1, 1]``), text where a number belongs (ImagePositionPatient, ImageOrientationPatient), a non-finite or
non-positive PixelSpacing, a non-finite or zero RescaleSlope, a non-finite RescaleIntercept -- skips the
file as ``bad-header`` with the element named. A missing or non-numeric RescaleSlope / RescaleIntercept
(required for CT) is replaced by 1 / 0 with a warning; a missing PixelSpacing by 1 mm with a warning.
Only finite images in [0, 1] are returned.

Conventions
-----------
- HU = stored value * RescaleSlope + RescaleIntercept (per frame for Enhanced CT). Pixels equal to
  PixelPaddingValue (or inside PixelPaddingRangeLimit) become air, -1024 HU.
- Window ``(level, width)`` in HU maps ``[level - width/2, level + width/2]`` linearly onto [0, 1] and
  clips outside (a plain linear ramp, not the DICOM VOI ``width - 1`` variant).
- Resampling: the slice covers ``rows * PixelSpacing[0]`` by ``cols * PixelSpacing[1]`` mm. The output
  is a square field of view of side ``fov`` mm (default: the longer side of the slice), centred on the
  centre of the image matrix, sampled on ``size x size`` square pixels of ``fov / size`` mm. Each axis
  is resized on its own (so non-square pixels become square) with scikit-image's ``resize``
  (bilinear, Gaussian anti-aliasing when shrinking), in HU; then the shorter side is padded with air
  (-1024 HU) or a longer side cropped, centred. Rounding the resized extent to whole pixels moves an
  edge by at most half an output pixel.
"""

from __future__ import annotations

import math
import os
import re
import stat
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "WINDOWS",
    "AIR_HU",
    "SKIP_REASONS",
    "parse_window",
    "apply_window",
    "resample_slice",
    "read_ct_file",
    "truncation",
    "exception_text",
    "Frame",
    "FileResult",
]

# Window presets: name -> (level, width) in HU.
WINDOWS = {
    "abdomen": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "full": (1023.5, 4095.0),  # [-1024, 3071] HU: the 12-bit CT range
}
AIR_HU = -1024.0

CT_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}

SKIP_REASONS = {
    "not-dicom": "not a DICOM file",
    "truncated": "file ends early, inside the header or the pixel data (the detail names the element)",
    "unidentified": "intact DICOM without Modality and SOP Class UID: cannot be recognised as an image",
    "no-pixels": "intact CT image header without a Pixel Data element (e.g. pixel data stripped on export)",
    "unreadable": "DICOM file that cannot be parsed",
    "not-ct": "not a CT image (other modality or SOP class)",
    "localizer": "CT localizer (scout) image, not a slice",
    "unsupported-pixels": "pixel layout not supported (colour or more than one sample per pixel)",
    "decode-error": "pixel data cannot be decoded",
    "bad-header": "a header value the slice needs is malformed (the detail names it)",
    "not-regular": "not a regular file (FIFO, socket, device or broken link)",
    "duplicate": "same SOP instance as a file already read",
    "constant": "every slice is (nearly) constant: no image content (see QC in docs/cli/prepare-dicom.md)",
    "saturated": "every slice is (nearly) all at the window's minimum or maximum (see QC)",
    # prepare-volumes (ctrobust.data.volumes)
    "not-nifti": "not a NIfTI file (nibabel cannot recognise it)",
    "no-patient-key": "the file's path does not match --patient-pattern",
}

_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFLATED = "1.2.840.10008.1.2.1.99"  # value offsets refer to the inflated stream, not the file

# Warnings counted in the summary (constant texts, so that files with the same problem add up).
WARN_NO_SPACING = "no PixelSpacing: square 1 mm pixels assumed"
WARN_NO_SLOPE = "RescaleSlope missing or not a number: 1 assumed (stored values taken as HU)"
WARN_NO_INTERCEPT = "RescaleIntercept missing or not a number: 0 assumed (stored values taken as HU)"


def parse_window(spec) -> tuple[str, float, float]:
    """Parse a window: a preset name (:data:`WINDOWS`) or ``"LEVEL,WIDTH"`` in HU.

    Returns ``(name, level, width)``; raises ``ValueError`` with the accepted forms.
    """
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        level, width = float(spec[0]), float(spec[1])
        name = f"{level:g},{width:g}"
    else:
        text = str(spec).strip().lower()
        if text in WINDOWS:
            level, width = WINDOWS[text]
            name = text
        else:
            parts = text.split(",")
            try:
                if len(parts) != 2:
                    raise ValueError
                level, width = float(parts[0]), float(parts[1])
            except ValueError:
                raise ValueError(f"window {spec!r} is neither a preset ({', '.join(WINDOWS)}) nor "
                                 "LEVEL,WIDTH in HU (e.g. 40,400)") from None
            name = f"{level:g},{width:g}"
    if not (math.isfinite(level) and math.isfinite(width)) or width <= 0:
        raise ValueError(f"window width must be a positive number of HU, got level {level}, width {width}")
    return name, level, width


def apply_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map HU linearly from ``[level - width/2, level + width/2]`` to [0, 1], clipping; float32."""
    lo = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float64) - lo) / width, 0.0, 1.0).astype(np.float32)


def resample_slice(hu: np.ndarray, spacing: tuple[float, float], size: int,
                   fov: float | None = None) -> tuple[np.ndarray, float]:
    """Resample a slice in HU onto a square ``size x size`` grid of square pixels.

    Parameters
    ----------
    hu : array (rows, cols)
        Slice in HU.
    spacing : (row_spacing, col_spacing)
        PixelSpacing in mm (DICOM order: between rows, between columns).
    size : int
        N, output side in pixels.
    fov : float or None
        Side of the output field of view in mm; None: the longer side of the slice.

    Returns
    -------
    (image, pixel_spacing)
        float64 ``(size, size)`` in HU and the output pixel size in mm (``fov / size``).
    """
    from skimage.transform import resize

    rows, cols = hu.shape
    dr, dc = float(spacing[0]), float(spacing[1])
    height, width = rows * dr, cols * dc
    side = float(fov) if fov else max(height, width)
    step = side / size
    shape = (max(1, int(round(height / step))), max(1, int(round(width / step))))
    img = np.asarray(hu, dtype=np.float64)
    if shape != img.shape:
        img = resize(img, shape, order=1, mode="edge", anti_aliasing=shape[0] < rows or shape[1] < cols,
                     preserve_range=True)
    out = np.full((size, size), AIR_HU, dtype=np.float64)
    # centre crop (source offset) or centre pad (destination offset), per axis
    src, dst = [], []
    for n_in in img.shape:
        if n_in >= size:
            o = (n_in - size) // 2
            src.append(slice(o, o + size))
            dst.append(slice(0, size))
        else:
            o = (size - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(o, o + n_in))
    out[dst[0], dst[1]] = img[src[0], src[1]]
    return out, step


@dataclass
class Frame:
    """One CT slice read from a file (raw identifiers stay in memory; never written out)."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_index: int
    position: float  # mm along the slice normal; NaN if unknown
    instance_number: float  # NaN if absent
    pixel_spacing: float  # output mm per pixel; NaN if unknown
    image: np.ndarray  # float32 (size, size) in [0, 1]


@dataclass
class FileResult:
    """What :func:`read_ct_file` made of one file: frames, or a skip reason, plus warnings."""

    path: str
    frames: list = field(default_factory=list)
    skip: str | None = None
    detail: str = ""
    warnings: list = field(default_factory=list)


_QUOTED = re.compile("'[^']*'|\"[^\"]*\"")  # a single- or double-quoted value


def exception_text(exc: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` of an exception for the log, with every quoted value replaced by ``'...'``.

    pydicom quotes the offending header value in its messages (``Invalid value for VR DA: '19510203x'``);
    that value may be a name, an ID or a date, and the log must not carry identifiers.
    """
    text = _QUOTED.sub("'...'", str(exc))
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}"


def _num(value, default=float("nan")) -> float:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


class _BadHeader(Exception):
    """A header value the slice is built from is malformed; the message names the element."""


_MISSING = object()  # element absent or empty
_NOT_A_NUMBER = object()  # element present, but pydicom cannot read it as a number


def _get(read, keyword: str):
    """``read()``, a header look-up; ``_MISSING`` for an absent or empty value, ``_NOT_A_NUMBER`` if
    pydicom cannot convert the stored text (e.g. ``"abc"`` in a DS element)."""
    try:
        value = read()
    except Exception:  # pydicom converts raw values lazily; a bad number raises on access
        return _NOT_A_NUMBER
    if value is None or value == "" or (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0):
        return _MISSING
    return value


def _values(value) -> list:
    """The values of a possibly multi-valued element as a list."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return [value]
    return list(value)


def _show(items) -> str:
    return "\\".join(str(v) for v in items)


def _floats(value, keyword: str, count: int) -> list[float]:
    """Exactly ``count`` finite numbers from a header value, or :class:`_BadHeader` naming ``keyword``."""
    if value is _NOT_A_NUMBER:
        raise _BadHeader(f"{keyword} is not numeric")
    items = _values(value)
    if len(items) != count:
        raise _BadHeader(f"{keyword} has {len(items)} value(s) ({_show(items)}), expected {count}")
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        raise _BadHeader(f"{keyword} is not numeric ({_show(items)})") from None
    if not all(math.isfinite(v) for v in out):
        raise _BadHeader(f"{keyword} is not finite: {out!r}")
    return out


def _single_int(ds, keyword: str, default: int) -> int:
    """A one-valued integer element (``default`` when absent), or :class:`_BadHeader`."""
    value = _get(lambda: ds.get(keyword), keyword)
    if value is _MISSING:
        return default
    if value is _NOT_A_NUMBER:
        raise _BadHeader(f"{keyword} is not an integer")
    items = _values(value)
    if len(items) != 1:
        raise _BadHeader(f"{keyword} has {len(items)} values ({_show(items)}), expected one")
    try:
        number = float(items[0])
    except (TypeError, ValueError):
        raise _BadHeader(f"{keyword} is not an integer: {items[0]!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise _BadHeader(f"{keyword} is not an integer: {items[0]!r}")
    return int(number)


def _rescale(ds, i: int, keyword: str, default: float, missing_warning: str, warnings_out: list) -> float:
    """RescaleSlope / RescaleIntercept of frame ``i``: ``default`` with a warning when missing or not a
    number; :class:`_BadHeader` when multi-valued, non-finite, or (slope) zero."""
    value = _get(lambda: _lookup(ds, i, "PixelValueTransformationSequence", keyword), keyword)
    if value is _MISSING or value is _NOT_A_NUMBER:
        warnings_out.append(missing_warning)
        return default
    items = _values(value)
    if len(items) != 1:
        raise _BadHeader(f"{keyword} has {len(items)} values ({_show(items)}), expected one")
    try:
        number = float(items[0])
    except (TypeError, ValueError):
        warnings_out.append(missing_warning)
        return default
    if not math.isfinite(number):
        raise _BadHeader(f"{keyword} is {number}: HU would not be finite")
    if keyword == "RescaleSlope" and number == 0:
        raise _BadHeader("RescaleSlope is 0: every pixel would get the same HU value")
    return number


def _lookup(ds, i: int, sequence: str, keyword: str):
    """Value of ``keyword`` for frame ``i``: per-frame functional group, shared group, then top level."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if not seq:
            continue
        item = seq[i] if groups.startswith("PerFrame") and i < len(seq) else seq[0]
        sub = item.get(sequence)
        if sub and keyword in sub[0]:
            return sub[0].get(keyword)
    return ds.get(keyword)


def _patient_key(ds) -> str:
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return "id:" + pid
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    if name or birth:
        return f"name:{name}|{birth}"
    return "study:" + str(ds.get("StudyInstanceUID", "") or "")  # each study its own patient


def truncation(ds, file_size: int) -> str | None:
    """Where a file read by ``pydicom.dcmread`` was cut short, or None if its last element is complete.

    pydicom stops quietly at the end of a file: a value cut short is returned with fewer bytes than its
    length, and fewer than 8 bytes after the last element (a cut element header) are ignored. This
    compares the last top-level element's declared extent with ``file_size``. Call it before any value is
    accessed (the elements are still raw then). A file without any data element after its file meta
    information counts as cut short too. Undefined-length elements and deflated files are not checked.
    """
    keys = list(ds.keys())
    meta = getattr(ds, "file_meta", None)
    if not keys:
        return ("file ends inside or right after the file meta information: no data element"
                if file_size > 0 else "empty file")
    if str(getattr(meta, "TransferSyntaxUID", "") or "") == _DEFLATED:
        return None
    elem = ds.get_item(keys[-1])
    tell, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
    if tell is None or length is None or length == _UNDEFINED_LENGTH:
        return None
    end = int(tell) + int(length)
    name = _tag_name(keys[-1])
    if end > file_size:
        return f"file ends inside element {name}: {max(file_size - int(tell), 0)} of its {int(length)} value bytes present"
    if 0 < file_size - end < 8:
        return f"file ends inside the header of the element after {name} ({file_size - end} stray bytes)"
    return None


def _tag_name(tag) -> str:
    from pydicom.datadict import keyword_for_tag
    from pydicom.tag import Tag

    tag = Tag(tag)
    keyword = keyword_for_tag(tag)
    return f"({tag.group:04X},{tag.element:04X})" + (f" {keyword}" if keyword else "")


def _classify(ds, cut: str | None = None) -> tuple[str | None, str]:
    """(skip reason or None, detail) from the header alone; ``cut``: :func:`truncation`'s finding."""
    if cut:
        return "truncated", cut
    modality = str(ds.get("Modality", "") or "")
    sop = str(ds.get("SOPClassUID", "") or "")
    if not modality and not sop:
        meta_sop = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("MediaStorageSOPClassUID")
        said = f"; the file meta information names {getattr(meta_sop, 'name', meta_sop)}" if meta_sop else ""
        return "unidentified", (f"complete file of {len(ds)} data element(s) without Modality and SOPClassUID{said}: "
                                "not recognisable as a CT image")
    if sop in CT_IMAGE_STORAGE and "PixelData" not in ds:
        return "no-pixels", "complete CT image header without a Pixel Data element: nothing to read"
    if sop not in CT_IMAGE_STORAGE or modality != "CT":
        sop_name = getattr(ds.get("SOPClassUID"), "name", sop) or "unknown SOP class"
        return "not-ct", f"modality {modality or 'missing'}, {sop_name}"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer", "ImageType " + "\\".join(image_type)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if _single_int(ds, "SamplesPerPixel", 1) != 1 or not photometric.startswith("MONOCHROME"):
        return "unsupported-pixels", f"{ds.get('SamplesPerPixel')} samples, {ds.get('PhotometricInterpretation')}"
    return None, ""


def read_ct_file(path: str, window: tuple[float, float], size: int, fov: float | None = None) -> FileResult:
    """Read one file into windowed, resampled CT slices, or say why it is skipped.

    Parameters
    ----------
    path : str
        Any file; DICOM is recognised by content, not extension.
    window : (level, width)
        HU window mapped to [0, 1].
    size : int
        N, output side in pixels.
    fov : float or None
        Output field of view in mm (see :func:`resample_slice`).

    Returns
    -------
    FileResult
        ``frames``: one :class:`Frame` per kept slice (multi-frame files are split), float32 ``(N, N)``
        images in [0, 1]; or ``skip`` with a reason from :data:`SKIP_REASONS` and a detail.
    """
    result = FileResult(path=str(path))
    try:
        mode = os.stat(path).st_mode  # follows links: a link to a regular file is read
    except OSError as exc:
        result.skip = "not-regular" if os.path.islink(path) else "unreadable"
        result.detail = f"{type(exc).__name__}: {exc}"
        return result
    if not stat.S_ISREG(mode):  # never open a FIFO (it would block) or a device
        kind = ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else
                "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "folder" if stat.S_ISDIR(mode) else "special file")
        result.skip, result.detail = "not-regular", f"a {kind}, not a regular file"
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd values; the outcome is in the result
        try:
            _read_into(result, path, window, size, fov)
        except _BadHeader as exc:
            result.frames, result.skip, result.detail = [], "bad-header", str(exc)
        except Exception as exc:  # noqa: BLE001 - documented: never raise for a bad file
            result.frames, result.skip = [], "unreadable"
            result.detail = f"cannot interpret the header: {exception_text(exc)}"
    if result.skip is not None:
        result.warnings = []
    result.warnings = sorted(set(result.warnings))
    return result


def _read_into(result: FileResult, path, window, size, fov) -> None:
    """The body of :func:`read_ct_file`: fills ``result``; may raise :class:`_BadHeader`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    cut = None
    try:
        try:
            ds = pydicom.dcmread(path)
            cut = truncation(ds, os.path.getsize(path))
        except InvalidDicomError:
            # no preamble / 'DICM' prefix: accept only if it parses as a CT image anyway (old files)
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:
                ds = None
            if ds is None or str(ds.get("Modality", "")) != "CT" or "PixelData" not in ds:
                result.skip, result.detail = "not-dicom", "no DICOM preamble / 'DICM' prefix"
                return
            cut = truncation(ds, os.path.getsize(path))
            if "SOPClassUID" not in ds:
                ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
                result.warnings.append("no DICOM preamble: read as CT Image Storage")
    except (EOFError, OSError) as exc:
        result.skip = "truncated" if isinstance(exc, EOFError) else "unreadable"
        result.detail = exception_text(exc)
        return
    except Exception as exc:  # pydicom raises many types on corrupt headers
        result.skip, result.detail = "unreadable", exception_text(exc)
        return

    reason, detail = _classify(ds, cut)
    if reason:
        result.skip, result.detail = reason, detail
        return

    try:
        raw = ds.pixel_array
    except Exception as exc:
        msg = exception_text(exc)
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if "less than expected" in str(exc) or "truncat" in str(exc).lower() or isinstance(exc, EOFError):
            result.skip = "truncated"
        else:
            result.skip = "decode-error"
            msg = f"transfer syntax {getattr(tsyntax, 'name', tsyntax)}: {msg}"
        result.detail = msg
        return

    n_frames = _single_int(ds, "NumberOfFrames", 1) or 1
    raw = np.asarray(raw)
    if n_frames == 1 and raw.ndim == 2:
        raw = raw[None]
    if raw.ndim != 3:
        result.skip, result.detail = "unsupported-pixels", f"pixel array of shape {raw.shape}"
        return

    level, width = window
    padding = _get(lambda: ds.get("PixelPaddingValue"), "PixelPaddingValue")
    padding_limit = _get(lambda: ds.get("PixelPaddingRangeLimit"), "PixelPaddingRangeLimit")
    ids = dict(
        patient_id=_patient_key(ds),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
    )
    instance = _num(_get(lambda: ds.get("InstanceNumber"), "InstanceNumber"))
    for i in range(raw.shape[0]):
        stored = raw[i]
        slope = _rescale(ds, i, "RescaleSlope", 1.0, WARN_NO_SLOPE, result.warnings)
        intercept = _rescale(ds, i, "RescaleIntercept", 0.0, WARN_NO_INTERCEPT, result.warnings)
        hu = stored.astype(np.float64) * slope + intercept
        if not np.isfinite(hu).all():
            raise _BadHeader(f"HU values overflow (RescaleSlope {slope:g}, RescaleIntercept {intercept:g})")
        if isinstance(padding, (int, float)):
            lo, hi = sorted((int(padding), int(padding_limit if isinstance(padding_limit, (int, float)) else padding)))
            hu[(stored >= lo) & (stored <= hi)] = AIR_HU
        spacing = _get(lambda: _lookup(ds, i, "PixelMeasuresSequence", "PixelSpacing"), "PixelSpacing")
        if spacing is _MISSING:
            spacing = (1.0, 1.0)
            result.warnings.append(WARN_NO_SPACING)
            known_spacing = False
        else:
            spacing = tuple(_floats(spacing, "PixelSpacing", 2))
            if not all(v > 0 for v in spacing):
                raise _BadHeader(f"PixelSpacing must be positive (mm), got {list(spacing)!r}")
            known_spacing = True
        hu_out, step = resample_slice(hu, spacing, size, fov if known_spacing else None)
        if known_spacing and abs(spacing[0] - spacing[1]) > 1e-6 * max(spacing):
            result.warnings.append("non-square pixels resampled to square")
        position = float("nan")
        ipp = _get(lambda: _lookup(ds, i, "PlanePositionSequence", "ImagePositionPatient"), "ImagePositionPatient")
        if ipp is not _MISSING:
            ipp = np.asarray(_floats(ipp, "ImagePositionPatient", 3))
            iop = _get(lambda: _lookup(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"),
                       "ImageOrientationPatient")
            if iop is not _MISSING:
                iop = np.asarray(_floats(iop, "ImageOrientationPatient", 6))
                normal = np.cross(iop[:3], iop[3:])
                position = float(ipp @ normal) if np.linalg.norm(normal) > 0.5 else float(ipp[2])
            else:
                position = float(ipp[2])
        frame_instance = instance if n_frames == 1 else _num(
            _get(lambda: _lookup(ds, i, "FrameContentSequence", "InStackPositionNumber"), "InStackPositionNumber"),
            float(i + 1))
        image = apply_window(hu_out, level, width)
        if not np.isfinite(image).all():  # cannot happen after the checks above; never write NaN
            raise _BadHeader("the windowed image is not finite")
        result.frames.append(Frame(
            frame_index=i, position=position, instance_number=frame_instance,
            pixel_spacing=step if known_spacing else float("nan"),
            image=image, **ids,
        ))
