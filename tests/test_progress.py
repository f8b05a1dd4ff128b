"""One rule for progress bars: drawn only on a terminal (ctrobust.progress), in every long loop."""

import io

import torch

from ctrobust import progress
from ctrobust.attacks import AttackSettings


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_only_on_a_terminal():
    pipe, tty = io.StringIO(), FakeTerminal()
    for stream, drawn in ((pipe, False), (tty, True)):
        with progress.tqdm(total=3, desc="work", file=stream) as bar:
            bar.update(3)
        assert ("work" in stream.getvalue()) is drawn
    with progress.tqdm(total=3, desc="off", file=FakeTerminal(), disable=True) as bar:  # progress=False on a terminal
        bar.update(3)
        assert bar.disable
    assert not progress.on_terminal(io.StringIO()) and progress.on_terminal(FakeTerminal())
    closed = io.StringIO()
    closed.close()  # isatty raises ValueError
    assert not progress.on_terminal(closed) and not progress.on_terminal(object())


def test_long_loops_write_no_bars_into_pipes_and_logs(capsys, monkeypatch):
    """robustness_curve's sample and attack-step bars (which ignored the terminal rule) and fit's bar stay
    silent when stderr is a pipe or a log file, even with progress=True; on a terminal they draw."""
    from ctrobust.evaluation.robustness import robustness_curve
    from ctrobust.operators.geometry import ParallelBeam2D
    from ctrobust.operators.radon import RadonTransform

    op = RadonTransform(ParallelBeam2D(16, 8))
    data = [torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))]
    robustness_curve(op.fbp, data, op, [0.0, 0.01], AttackSettings(steps=2), progress=True)
    assert "samples" not in capsys.readouterr().err
    tty = FakeTerminal()
    monkeypatch.setattr("sys.stderr", tty)
    robustness_curve(op.fbp, data, op, [0.0, 0.01], AttackSettings(steps=2), progress=True)
    assert "samples" in tty.getvalue() and "APGD steps" in tty.getvalue()
