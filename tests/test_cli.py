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


def _toy_args(out):
    return [
        "--set", "data.name=toy", "--set", "data.toy=moons", "--set", "data.toy_samples=2000",
        "--set", "model.net=mlp", "--set", "model.options={hidden: 32, depth: 2}",
        "--set", "train.steps=30", "--set", "train.batch_size=64", "--set", "train.progress=false",
        "--set", "train.ema_decay=0.5", "--set", "train.checkpoint_every=20", "--out", str(out),
    ]  # fmt: skip


def test_train_sample_likelihood_on_a_toy_set(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *_toy_args(run)]) == 0
    assert (run / "final" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    assert "trained to step 30" in capsys.readouterr().out
    # A second call finds the finished run and resumes instead of starting again.
    assert main(["train", *_toy_args(run), "--set", "train.steps=40"]) == 0
    assert "resumed from step 30" in capsys.readouterr().out

    assert main(["sample", str(run), "--method", "dpmpp_2m", "--nfe", "8", "--n", "256"]) == 0
    import torch

    samples = torch.load(run / "samples" / "dpmpp_2m.pt")
    assert samples.shape == (256, 2) and torch.isfinite(samples).all()
    assert (run / "samples" / "dpmpp_2m.png").read_bytes()[:4] == b"\x89PNG"
    assert "NFE 8" in capsys.readouterr().out

    assert main(["likelihood", str(run), "--n", "32"]) == 0
    report = json.loads((run / "likelihood.json").read_text())
    assert report["metric"] == "nats/point" and report["n"] == 32
    assert math.isfinite(report["value"]) and report["std_error"] >= 0 and report["nfe"] > 0


def test_train_prints_config_and_rejects_bad_ones(tmp_path, capsys):
    assert main(["train", "--print-config", "--set", "train.steps=5"]) == 0
    assert "steps: 5" in capsys.readouterr().out
    assert main(["train", "--set", "train.stepz=5", "--out", str(tmp_path)]) == 2
    assert "'train.stepz'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: mnist-idx\n  path: /no/such/file\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "data.path" in capsys.readouterr().err
    assert main(["train", "--set", "model.net=transformer", "--out", str(tmp_path / "r")]) == 2
    assert "model.net" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_demo_at_a_tiny_size_writes_its_report(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--set", "train.steps=30", "--set", "train.progress=false",
            "--set", "likelihood.n=6", "--set", "likelihood.repeats=2", "--set", "sample.n=9",
            "--set", "model.options={hidden: 32, depth: 1}"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "held-out bits/dim:" in text
    summary = json.loads((out / "demo.json").read_text())
    bpd = summary["bits_per_dim"]
    assert bpd["metric"] == "bits/dim" and bpd["n"] == 6 and bpd["repeats"] == 2
    assert math.isfinite(bpd["value"]) and math.isfinite(bpd["std_error"])
    # An untrained residual on the categorical base is about the categorical model itself.
    assert abs(bpd["value"] - summary["baselines_bits_per_dim"]["categorical"]) < 1.0
    for name in summary["figures"].values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "reverse_trajectory.png" in summary["figures"].values()
    from PIL import Image

    with Image.open(out / "reverse_trajectory.gif") as gif:
        assert gif.n_frames > 5
    report = (out / "report.md").read_text()
    assert "Held-out bits/dim" in report and "samples_unipc.png" in report
    assert [r["nfe"] for r in summary["samplers"]] == [20, 400]
