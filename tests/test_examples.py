"""The worked examples run end to end (``--quick``) and report passing checks."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOUBLE_WELL = ROOT / "examples" / "double_well.py"


def run_example(script: pathlib.Path, *args: str) -> str:
    # -W error: the example must run warning-free, as the test suite does.
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), *args],
        cwd=ROOT,
        # One thread, as in conftest: small tensors, and a busy second core slows OpenMP badly.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_double_well_quick(tmp_path):
    args = ["--quick"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        figure = None
    else:
        figure = tmp_path / "double_well.png"
        args += ["--out", str(figure)]
    out = run_example(DOUBLE_WELL, *args)
    for line in [
        "DoubleWell(t_min=0.001, T=30.0)",
        "n = 500 samples, 750 Euler steps",
        "sampling grid agrees to",
        "Fokker–Planck residual of p: max",
        "<= 1e-10: ok",
        "[3] forward SDE from x = 1 to t = 30",
        "[4] sdegen.sample(method='euler', steps=750)",
        "rejected, as it should be",
        "all checks passed",
    ]:
        assert line in out, f"missing {line!r} in the output:\n{out}"
    assert "FAIL" not in out
    assert out.count("-> ok") == 2  # the forward simulation and sample() KS tests
    if figure is not None:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


TEST_YOUR_SDE = ROOT / "examples" / "test_your_sde.py"


def test_test_your_sde_clean_and_planted_bugs():
    """The clean SDE passes every check; each planted bug is caught by at least one (the
    script exits non-zero when the verdict is not the expected one)."""
    out = run_example(TEST_YOUR_SDE, "--quick")
    assert "verdict: all checks pass" in out
    caught = {
        "start": "[FAIL] limits",
        "variance": "[FAIL] Fokker–Planck",
        "drift": "[FAIL] kernel vs torchsde simulation",
    }
    for bug, line in caught.items():
        out = run_example(TEST_YOUR_SDE, "--quick", "--bug", bug)
        assert line in out, out
    assert "[pass] Fokker–Planck" in run_example(TEST_YOUR_SDE, "--quick", "--bug", "start")
