from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.errors import ConfigError

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate_and_name_registered_models(path):
    from medseg.nets import list_models

    cfg = load_config(path)
    assert cfg.model.name in list_models()


def test_overrides_are_typed():
    cfg = load_config(None, ["train.epochs=3", "train.patch_size=[16, 16, 16]", "model.kwargs.cross_modal=false"])
    assert cfg.train.epochs == 3 and cfg.train.patch_size == (16, 16, 16)
    assert cfg.model.kwargs["cross_modal"] is False


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epocs"):
        load_config(p)


def test_yaml_is_parsed_safely(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
