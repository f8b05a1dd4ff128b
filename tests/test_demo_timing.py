"""The demo's time per stage: wall and CPU seconds that add up, and the default attack budget it runs."""

import time

from ctrobust.app.demo import StageClock, demo_stages
from ctrobust.app.specs import DemoSpec


def test_stage_clock_measures_each_stage():
    clock = StageClock()
    with clock("sleep"):
        time.sleep(0.2)
    with clock("work"):
        sum(i * i for i in range(200_000))
    rec = clock.record()
    assert list(rec["stages"]) == ["sleep", "work"]
    assert rec["stages"]["sleep"]["wall_s"] >= 0.19 and rec["stages"]["sleep"]["cpu_s"] < 0.15  # sleeping is not CPU
    assert rec["total"]["wall_s"] == round(sum(v["wall_s"] for v in rec["stages"].values()), 2)
    assert clock.text().startswith("sleep ") and "total" in clock.text()
    try:
        with clock("failed"):
            raise RuntimeError
    except RuntimeError:
        pass
    assert "failed" in clock.record()["stages"]  # a stage that raised is still timed


def test_demo_attack_budget():
    """The demo's attack runs 200 steps (100 left its networks unconverged at eps 0.02 and 0.04)."""
    attack = demo_stages(DemoSpec())[2]
    assert attack.steps == 200 and DemoSpec().attack_steps == 200
