"""Small synthetic DICOM files for the data tests (built with pydicom; identifiers set on purpose)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _base(sop_class, modality, *, patient_id, patient_name, birth_date, accession, institution,
          study_uid, series_uid, sop_uid=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.AccessionNumber = accession
    ds.InstitutionName = institution
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = "20200101"
    return ds


def _pixels(ds, stored: np.ndarray):
    stored = np.asarray(stored)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    ds.PixelData = stored.astype("<i2" if ds.PixelRepresentation else "<u2").tobytes()


def write_ct(path, stored, *, patient_id="PID-0001", patient_name="DOE^JANE", birth_date="19510203",
             accession="ACC0001", institution="St Example Hospital", study_uid=None, series_uid=None,
             sop_uid=None, z=0.0, instance=1, slope=1.0, intercept=-1024.0, spacing=(1.0, 1.0),
             rle=False, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), padding=None, with_position=True,
             raw=None, drop=()):
    """Write a single-frame CT Image Storage file; ``stored`` (rows, cols) int16/uint16 stored values.

    ``raw``: ``{keyword: bytes}`` written as the element's value bytes exactly as given (malformed values
    such as ``b"a\\b\\c "`` for ImagePositionPatient, which pydicom would refuse to encode); ``drop``:
    keywords removed before writing (``slope=None`` / ``intercept=None`` drop those two as well).
    """
    ds = _base(CT_STORAGE, "CT", patient_id=patient_id, patient_name=patient_name, birth_date=birth_date,
               accession=accession, institution=institution, study_uid=study_uid or generate_uid(),
               series_uid=series_uid or generate_uid(), sop_uid=sop_uid)
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance
    if with_position:
        ds.ImagePositionPatient = [-10.0, -10.0, float(z)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if padding is not None:
        ds.PixelPaddingValue = int(padding)
    _pixels(ds, stored)
    if rle:
        ds.compress(RLELossless)
    for keyword in drop:
        delattr(ds, keyword)
    for keyword, value in (raw or {}).items():
        set_raw(ds, keyword, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def set_raw(ds, keyword, value: bytes):
    """Store ``value`` as the undecoded bytes of element ``keyword`` (padded to even length with a space)."""
    tag = Tag(tag_for_keyword(keyword))
    if len(value) % 2:
        value += b" "
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def write_mr(path, stored, **ids):
    """Write an MR Image Storage file (must be skipped)."""
    kw = dict(patient_id="PID-MR", patient_name="ROE^RICHARD", birth_date="19600101", accession="ACCMR",
              institution="St Example Hospital", study_uid=generate_uid(), series_uid=generate_uid())
    kw.update(ids)
    ds = _base(MR_STORAGE, "MR", **kw)
    _pixels(ds, stored)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_enhanced_ct(path, frames, zs, *, slopes=None, intercept=-1024.0, spacing=(1.0, 1.0), **ids):
    """Write a multi-frame Enhanced CT file: ``frames`` (F, rows, cols), positions ``zs`` (F,), per-frame slopes."""
    kw = dict(patient_id="PID-ENH", patient_name="POE^EDGAR", birth_date="18090119", accession="ACCENH",
              institution="St Example Hospital", study_uid=generate_uid(), series_uid=generate_uid())
    kw.update(ids)
    ds = _base(ENHANCED_CT_STORAGE, "CT", **kw)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    frames = np.asarray(frames)
    ds.NumberOfFrames = frames.shape[0]
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    pm.SliceThickness = 1.0
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for i, z in enumerate(zs):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [0.0, 0.0, float(z)]
        item.PlanePositionSequence = Sequence([pp])
        pv = Dataset()
        pv.RescaleSlope = float(slopes[i]) if slopes is not None else 1.0
        pv.RescaleIntercept = intercept
        pv.RescaleType = "HU"
        item.PixelValueTransformationSequence = Sequence([pv])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    _pixels(ds, frames)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_truncated(path, source_ds_path, keep_fraction=0.6):
    """Copy a DICOM file but cut it short (ends inside the pixel data)."""
    raw = Path(source_ds_path).read_bytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(raw[: int(len(raw) * keep_fraction)])


def copy_testdata(name, dest):
    """Copy a file of pydicom's own (locally installed) test data, e.g. CT_small.dcm, 693_J2KI.dcm."""
    src = Path(pydicom.__file__).parent / "data" / "test_files" / name
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)
    return Path(dest)
