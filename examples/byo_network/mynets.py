"""A network of your own, in a module of your own: ``make_net(operator, **options) -> nn.Module``.

ctrobust names it by its import path, ``mynets:make_net``; a checkpoint stores that path, the JSON options and
the weights, so any process with this folder on its ``PYTHONPATH`` rebuilds it (docs/models.md).
"""

from __future__ import annotations

import torch
from torch import nn


class SmallFBPCNN(nn.Module):
    """``f(y) = x0 + CNN(x0)``: a residual CNN after the operator's FBP ``x0 = A^+ y`` (sinograms -> images)."""

    def __init__(self, operator, width: int = 16, layers: int = 3):
        super().__init__()
        self.operator = operator
        blocks = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            blocks += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        self.cnn = nn.Sequential(*blocks, nn.Conv2d(width, 1, 3, padding=1))
        nn.init.zeros_(self.cnn[-1].weight)  # starts as FBP
        nn.init.zeros_(self.cnn[-1].bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x0 = self.operator.pinv(y)
        return x0 + self.cnn(x0)


def make_net(operator, width: int = 16, layers: int = 3) -> nn.Module:
    """The factory: ctrobust calls ``make_net(operator, **options)`` to build and to rebuild the network."""
    return SmallFBPCNN(operator, width, layers)
