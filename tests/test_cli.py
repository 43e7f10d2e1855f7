import json
import math

import pytest

from sdegen.cli import main


def test_demo_writes_report_and_figure(tmp_path, capsys):
    code = main(["ground-truth", "--n", "1000", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert {r["method"] for r in summary["methods"]} == {"euler", "srk", "ode_rk4", "ode_dopri5"}
    for row in summary["methods"]:
        assert row["passed"] and row["nfe"] > 0 and math.isfinite(row["mean_error"])
    assert summary["round_trip_error"] < 1e-4
    assert summary["log_likelihood"]["error_per_dim"] < 2e-4
    png = tmp_path / "demo_samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "round trip" in out


def test_demo_rejects_bad_arguments(capsys):
    assert main(["ground-truth", "--n", "3"]) == 2
    assert "--n must be >= 1000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ground-truth", "--sde", "nope"])
