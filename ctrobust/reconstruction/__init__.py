"""Reconstruction methods that are not trained checkpoints, and test-time adaptation.

- :mod:`~ctrobust.reconstruction.classical`: total variation (Chambolle-Pock) and the deep image prior;
- :mod:`~ctrobust.reconstruction.ttt`: test-time training of a trained network on one measurement;
- :mod:`~ctrobust.reconstruction.holdout`: the held-out measurement bins of DIP and TTT;
- :mod:`~ctrobust.reconstruction.methods`: the named-method registry (``--method fbp|tv|dip``).

Imports point down (models, attacks, operators, infrastructure). Public names are re-exported here lazily.
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    **dict.fromkeys((
        'tv_reconstruction', 'tv_objective', 'total_variation', 'gradient', 'divergence',
        'deep_image_prior', 'DIPInfo', 'operator_norm', 'TVReconstruction', 'DIPReconstruction',
        'build_tv', 'build_dip',
    ), "ctrobust.reconstruction.classical"),
    **dict.fromkeys((
        'holdout_mask',
    ), "ctrobust.reconstruction.holdout"),
    **dict.fromkeys((
        'METHODS', 'METHOD_SIGNATURES', 'register_method', 'build_method', 'method_options',
        'parse_method_option', 'split_methods', 'FBPReconstruction', 'move_to',
    ), "ctrobust.reconstruction.methods"),
    **dict.fromkeys((
        'test_time_train', 'TTTInfo', 'copy_model', 'fill_heldout', 'data_consistency',
    ), "ctrobust.reconstruction.ttt"),
}

__all__ = sorted(_EXPORTS)
#: modules reachable as attributes on first use
SUBMODULES = ('classical', 'holdout', 'methods', 'ttt')
__getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), SUBMODULES)
