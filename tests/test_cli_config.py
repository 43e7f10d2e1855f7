"""Run configs: defaults, files, overrides, and errors that name the key."""

import pytest

from sdegen.cli.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)


def test_defaults_round_trip_through_yaml_and_toml(tmp_path):
    cfg = config_from_dict({})
    assert cfg == RunConfig()
    (tmp_path / "a.yaml").write_text("train:\n  steps: 12\n  lr: 1\nsde:\n  class: VESDE\n")
    (tmp_path / "a.toml").write_text('[train]\nsteps = 12\nlr = 1\n[sde]\nclass = "VESDE"\n')
    for name in ("a.yaml", "a.toml"):
        cfg = config_from_dict(load_config(tmp_path / name))
        assert cfg.train.steps == 12 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
        assert cfg.sde == {"class": "VESDE"}
        assert config_from_dict(config_to_dict(cfg)) == cfg


def test_overrides_parse_values_and_nest():
    values = apply_overrides({}, ["train.steps=7", "model.options.channels=16", "data.path=null"])
    cfg = config_from_dict(values)
    assert cfg.train.steps == 7 and cfg.model.options == {"channels": 16} and cfg.data.path is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "'trian'"),
        ({"train": {"stepz": 3}}, "'train.stepz'"),
        ({"train": {"steps": "many"}}, "train.steps must be int"),
        ({"train": {"steps": 2.5}}, "train.steps must be int"),
        ({"train": {"bf16": 1}}, "train.bf16 must be bool"),
        ({"data": 3}, "data must be a mapping"),
    ],
)
def test_bad_configs_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.toml"):
        load_config(tmp_path / "x.json")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        apply_overrides({}, ["train.steps"])
