"""Where library randomness comes from: explicit ``torch.Generator`` objects, never the global RNG.

Infrastructure shared by every layer (the noise models of :mod:`ctrobust.operators.noise`, the attacks,
the objectives): same seed, same numbers, on CPU and CUDA alike.
"""

from __future__ import annotations

import torch

__all__ = ["default_generator"]


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a fresh CPU generator seeded 0 (library code never draws from the global RNG).

    The default lives on the CPU whatever device the data are on: draws are made there and moved, so
    the same seed gives the same numbers on CPU and CUDA.
    """
    if generator is not None:
        return generator
    return torch.Generator(device="cpu").manual_seed(0)
