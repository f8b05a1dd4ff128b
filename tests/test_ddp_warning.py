"""The trainer wraps f in DistributedDataParallel without torch's per-rank FutureWarning (``broadcast_buffers``
is deprecated in favour of ``forward_sync_buffers``)."""

import warnings

import pytest
import torch
from torch import nn


def test_ddp_wrap_warns_nothing(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ctrobust.training.trainer import _no_buffer_sync

    keywords = _no_buffer_sync(DistributedDataParallel)
    assert list(keywords.values()) == [False]
    if dist.is_initialized():
        pytest.skip("a process group is already running")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = DistributedDataParallel(model, **keywords)
        assert not [w for w in caught if "buffers" in str(w.message)], [str(w.message) for w in caught]
        ddp(torch.randn(4, 3)).sum().backward()  # and it trains
        assert model[0].weight.grad is not None
    finally:
        dist.destroy_process_group()
