"""Evaluation: how a reconstruction is measured.

- :mod:`~ctrobust.evaluation.metrics`: per-sample MSE, relative error, PSNR, SSIM (scikit-image), ``mean_std``;
- :mod:`~ctrobust.evaluation.robustness`: robustness curves over an eps grid (clean / dose / random / attack
  rows), the ``--verify`` re-check;
- :mod:`~ctrobust.evaluation.shift`: distribution shift and the gap test-time training closes;
- :mod:`~ctrobust.evaluation.features`: recovery of small features under attack;
- :mod:`~ctrobust.evaluation.mismatch_sweep`: sweeps and worst cases over scanner mismatch;
- :mod:`~ctrobust.evaluation.protocols`: named CT protocols (geometry in mm, dose, data, attack budget, fingerprint);
- :mod:`~ctrobust.evaluation.report`: tables and figures, ``build_report`` over result folders.

Imports point down (reconstruction, models, attacks, operators, data, infrastructure). Public names are
re-exported here lazily.
"""

from __future__ import annotations

from ctrobust._lazy import lazy_getattr

_EXPORTS = {
    **dict.fromkeys((
        'FeatureSet', 'insert_disks', 'feature_scores', 'evaluate_features', 'DETECTION_THRESHOLD', 'FEATURE_ATTACK',
        'RING_GAP', 'RING_WIDTH',
    ), "ctrobust.evaluation.features"),
    **dict.fromkeys((
        'mse', 'relative_error', 'psnr', 'ssim', 'all_metrics', 'mean_std',
    ), "ctrobust.evaluation.metrics"),
    **dict.fromkeys((
        'MISMATCH_KINDS', 'DEFAULT_MISMATCH_GRID', 'mismatch_operator', 'mismatch_sweep',
        'worst_case_grid', 'summarize_mismatch',
    ), "ctrobust.evaluation.mismatch_sweep"),
    **dict.fromkeys((
        'write_csv', 'write_json', 'read_csv', 'prepare_output_dir', 'format_table', 'attack_table',
        'plot_robustness_curves', 'plot_gallery', 'build_report', 'SUMMARY_FILE',
    ), "ctrobust.evaluation.report"),
    **dict.fromkeys((
        'RobustnessResult', 'robustness_curve', 'clean_metrics', 'summarize', 'CONDITIONS',
        'METRICS', 'DEFAULT_EPS_GRID', 'verify_attack', 'NOISE_CONDITION',
        'verification_settings', 'VERIFY_STEPS', 'VERIFY_RESTARTS', 'VERIFY_SEED',
    ), "ctrobust.evaluation.robustness"),
    **dict.fromkeys((
        'Protocol', 'ScanGeometry', 'DataSplit', 'AttackBudget', 'PROTOCOLS', 'get_protocol', 'to_pixels',
        'protocol_cards',
    ), "ctrobust.evaluation.protocols"),
    **dict.fromkeys((
        'Condition', 'ShiftResult', 'SHIFT_KINDS', 'stack_images',
        'rebuild_on_operator', 'evaluate_condition', 'gap_closed', 'distribution_shift',
        'make_shift',
    ), "ctrobust.evaluation.shift"),
}

__all__ = sorted(_EXPORTS)
#: modules reachable as attributes on first use
SUBMODULES = ('features', 'metrics', 'mismatch_sweep', 'protocols', 'report', 'robustness', 'shift')
__getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), SUBMODULES)
