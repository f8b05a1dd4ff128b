"""README.md's Python code blocks run as written: the operators block as is, the checkpoint block against a
checkpoint where the README says the demo writes it (runs/demo/minmax/best.pt), made small and quickly by
the trainer the demo uses (run_train, min-max) at another size than the operators block (so an example
that hard-codes a size fails, as the old 128 px example did against the demo's 64 px model)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_the_examples():
    blocks = python_blocks()
    assert len(blocks) == 2 and "RadonTransform" in blocks[0] and "runs/demo/minmax/best.pt" in blocks[1]


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    from ctrobust.app import TrainSpec, run_train

    root = tmp_path_factory.mktemp("readme")
    run_train(TrainSpec(objective="minmax", size=24, angles=20, n_train=4, n_val=2, max_steps=2, batch_size=2,
                        channels=4, depth=2, out=str(root / "runs" / "demo" / "minmax"), progress=False, device="cpu"))
    return root


@pytest.mark.parametrize("index", [0, 1])
def test_readme_python_block_runs(index, demo_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(demo_checkpoint)
    namespace: dict = {}
    exec(compile(python_blocks()[index], f"README.md python block {index + 1}", "exec"), namespace)
    if index == 0:
        assert tuple(namespace["x_fbp"].shape) == (4, 1, 128, 128)
    else:
        result, x = namespace["result"], namespace["x"]
        assert tuple(x.shape) == (4, 1, 24, 24) and result.error.shape == (4,)
        assert (result.error > 0).all() and capsys.readouterr().out.count("\n") >= 2
