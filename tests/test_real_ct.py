"""The real CT slices available offline (ctrobust.data.real) and the reserved --data real."""

import numpy as np
import pytest
import torch

from ctrobust.data import load_split, real_ct_files, real_ct_slices
from ctrobust.errors import CtrobustError


def test_files_are_local_and_include_pydicoms_own():
    files = real_ct_files()
    names = [f.name for f in files]
    assert names[:2] == ["CT_small.dcm", "J2K_pixelrep_mismatch.dcm"]  # in the pydicom wheel itself
    assert len(files) in (2, 4)  # 4 with pydicom-data installed
    assert all(f.path and f.description for f in files)


def test_shapes_range_and_hounsfield_units():
    x, files = real_ct_slices(32, return_files=True)
    assert x.shape == (len(files), 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    hu = x.numpy().astype(np.float64) * 4095.0 - 1024.0  # the 'full' window: [-1024, 3071] HU on [0, 1]
    for f, h in zip(files, hu):
        assert h.min() < -800, f.name  # air or lung in every slice
        assert 200 < h.max() < 3071, f.name  # bone, but no metal saturation
        assert -1024 <= np.median(h) < 100, f.name  # mostly air / soft tissue
    # water at 0.25: soft tissue of the thorax crop lies near it
    ct_small = x[0, 0].numpy()
    assert 0.2 < float(np.median(ct_small)) < 0.3
    # another window and size through the same path
    soft = real_ct_slices(16, window="abdomen")
    assert soft.shape[-1] == 16 and float(soft.max()) <= 1.0


def test_load_split_real_and_the_pipeline():
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.evaluation.metrics import psnr
    from ctrobust.operators.radon import RadonTransform

    ds = load_split("real", "test", size=32)
    assert ds.image_size == 32 and len(ds) >= 2 and tuple(ds[0].shape) == (1, 32, 32)
    op = RadonTransform(ParallelBeam2D(32, 45))
    x = torch.stack([ds[i] for i in range(len(ds))])
    rec = op.fbp(op(x))
    assert float(np.mean(psnr(rec.clamp(0, 1), x))) > 25


def test_real_data_in_commands(tmp_path):
    from ctrobust.app import EvaluateSpec, TrainSpec, run_evaluate, run_train

    res = run_evaluate(EvaluateSpec(method=("fbp",), data="real", size=32, angles=30, out=str(tmp_path / "e"),
                                    progress=False))
    assert res.summary[0]["n"] == len(real_ct_files())
    with pytest.raises(CtrobustError, match="evaluation set, not a training set"):
        run_train(TrainSpec(data="real", size=32, angles=10, max_steps=1, out=str(tmp_path / "t"), progress=False))
