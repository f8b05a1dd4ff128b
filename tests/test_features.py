"""Small-feature insertion and scoring."""

import warnings

import numpy as np
import pytest
import torch

from ctrobust.attacks import AttackSettings
from ctrobust.evaluation.features import DETECTION_THRESHOLD, evaluate_features, feature_scores, insert_disks

warnings.filterwarnings("ignore", message="Sparse")


def _body(batch=2, n=32, value=0.4):
    rr, cc = np.mgrid[:n, :n]
    disk = (np.hypot(rr - n / 2 + 0.5, cc - n / 2 + 0.5) < 0.4 * n).astype(np.float32) * value
    return torch.from_numpy(np.stack([disk] * batch))[:, None]


def test_insert_disks_geometry_and_contrast(global_rng_untouched):
    x = _body()
    feats = insert_disks(x, n_features=3, radius=1.5, contrast=0.2, seed=1)
    assert feats.images.shape == x.shape and feats.masks.shape == (2, 3, 32, 32)
    # radius 1.5 px: the 3 x 3 block of pixel centres within 1.5 of the centre
    assert torch.all(feats.masks.flatten(2).sum(2) == 9)
    diff = feats.images - x
    union = feats.masks.any(1, keepdim=True)
    assert torch.allclose(diff[union], torch.full_like(diff[union], 0.2))
    assert torch.all(diff[~union] == 0)
    # disks and rings inside the body, disjoint from each other
    body = (x > 0.05)
    assert torch.all(body.expand_as(feats.rings)[feats.rings | feats.masks])
    assert int((feats.masks | feats.rings).sum(1).max()) == 1
    for b in range(2):
        for k in range(3):
            r, c = feats.centers[b, k].tolist()
            assert bool(feats.masks[b, k, r, c])
    again = insert_disks(x, n_features=3, radius=1.5, contrast=0.2, seed=1)
    assert torch.equal(again.centers, feats.centers)
    assert not torch.equal(insert_disks(x, n_features=3, seed=2).centers, feats.centers)


def test_insert_disks_without_room_fails_clearly():
    with pytest.raises(ValueError, match="no room"):
        insert_disks(_body(n=12), n_features=2, radius=3.0)
    with pytest.raises(ValueError, match=r"\(B, 1, N, N\)"):
        insert_disks(torch.zeros(2, 32, 32))


def test_feature_scores_reference_cases():
    x = _body(1)
    feats = insert_disks(x, n_features=2, radius=2.0, contrast=0.3, seed=0)
    perfect = feature_scores(feats.images, feats)
    assert np.allclose(perfect["contrast_ratio"], 1.0) and np.allclose(perfect["local_error"], 0.0)
    assert np.allclose(perfect["true_contrast"], 0.3) and perfect["detected"].all()
    gone = feature_scores(x, feats)
    assert np.allclose(gone["contrast_ratio"], 0.0) and not gone["detected"].any()
    half = feature_scores(x + 0.5 * (feats.images - x), feats)
    assert np.allclose(half["contrast_ratio"], 0.5)
    assert half["detected"].all() == (0.5 >= DETECTION_THRESHOLD)
    noisy = feats.images + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    cnr = feature_scores(noisy, feats)["cnr"]
    assert np.all((cnr > 10) & (cnr < 100))  # contrast 0.3 over ~0.01 noise
    with pytest.raises(ValueError, match="reconstruction"):
        feature_scores(x[:, :, :8], feats)


def test_attack_on_features_lowers_their_contrast():
    from ctrobust import ParallelBeam2D, RadonTransform

    op = RadonTransform(ParallelBeam2D(32, 20))
    x = _body(1, 32, 0.5)
    rows = evaluate_features({"fbp": op.fbp}, op, x, eps=(0.0, 0.05), n_features=2, radius=1.5,
                             contrast=0.3, attack_region="features", settings=AttackSettings(steps=5))
    assert len(rows) == 4 and {r["eps"] for r in rows} == {0.0, 0.05}
    clean = [r["contrast_ratio"] for r in rows if r["eps"] == 0]
    attacked = [r["contrast_ratio"] for r in rows if r["eps"] > 0]
    assert min(clean) > 0.7 and all(r["detected"] for r in rows if r["eps"] == 0)
    assert np.mean(attacked) < np.mean(clean) - 0.1
    with pytest.raises(ValueError, match="attack_region"):
        evaluate_features({"fbp": op.fbp}, op, x, attack_region="ring")
