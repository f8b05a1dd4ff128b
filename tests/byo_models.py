"""A user's own networks, as a researcher would write them in a module of their own (tests/test_byo_models.py).

Nothing here knows ctrobust's model classes: ``make_tiny(operator, **options)`` returns a plain ``nn.Module``.
"""

from __future__ import annotations

import torch
from torch import nn

from ctrobust.models import register_model


class TinyFBPCNN(nn.Module):
    """``f(y) = x0 + CNN(x0)`` with ``x0`` the operator's FBP: a small residual CNN on top of ``A.pinv``."""

    def __init__(self, operator, width: int = 4):
        super().__init__()
        self.operator = operator
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x0 = self.operator.pinv(y)
        return x0 + self.net(x0)


def make_tiny(operator, width: int = 4) -> nn.Module:
    """The factory ``ctrobust train --model byo_models:make_tiny --model-option width=3`` names."""
    return TinyFBPCNN(operator, width)


@register_model("byo-tiny")
def make_registered(operator, width: int = 2) -> nn.Module:
    """The same network under a registered name (``--model byo-tiny`` once this module is imported)."""
    return TinyFBPCNN(operator, width)
