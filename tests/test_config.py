from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.errors import ConfigError

CONFIGS = sorted(Path(__file__).parents[1].joinpath("medseg", "configs").glob("*.yaml"))


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


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        # the hint was `medseg config show --config c.yaml`, which fails on the same key
        ("train:\n  lr_: 0.1\n", "unknown config key 'train.lr_'", "did you mean 'lr'? valid keys under 'train': "),
        ("train.epochs: 3\n", "unknown config key 'train.epochs'", "nest it: 'train:' with 'epochs: ...' indented"),
        ("trian:\n  epochs: 3\n", "unknown config key 'trian'", "did you mean 'train'? valid keys at the top level"),
        # PyYAML kept the last `train:`, silently dropping epochs: 3
        ("train:\n  epochs: 3\ntrain:\n  lr: 0.5\n", "not valid YAML: key 'train' given twice at line 3", "each key"),
        # the value was not named, and the fix (`config show --config c.yaml`) failed on the same value
        (
            "train:\n  epochs: 1e3\n",
            "invalid value for config key 'train.epochs': '1e3': Input should be a valid integer, unable to parse "
            "string as an integer",
            "correct it in the file",
        ),
    ],
)
def test_a_config_file_mistake_says_where_and_the_way_out(tmp_path, text, message, hint):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.message == message and hint in err.value.hint


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    """The duplicate-key check read `<<` as a key to construct: a config with `<<: *defaults` was "not valid YAML"."""
    p = tmp_path / "c.yaml"
    p.write_text("base: &base {epochs: 3, lr: 0.5}\ntrain: {<<: *base, lr: 0.1}\n")
    with pytest.raises(ConfigError, match="unknown config key 'base'"):  # the anchor's own key is still checked
        load_config(p)
    p.write_text("train: &t {epochs: 3, lr: 0.5}\ninfer: {threshold: 0.4}\n")
    assert load_config(p).train.epochs == 3
    p.write_text("train:\n  <<: {epochs: 3, lr: 0.5}\n  lr: 0.1\n")
    cfg = load_config(p)
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.1)  # merged, then overridden


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    """A Latin-1 comment (or a UTF-16 file from Notepad) was a UnicodeDecodeError traceback."""
    p = tmp_path / "c.yaml"
    p.write_bytes("train:\n  epochs: 2 # étape\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 21\)"):
        load_config(p)


def test_yaml_is_parsed_safely(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_bad_override_syntax():
    """Said the way the CLI shows it: "is not key=value" came out as "is not key=***" (the secret redaction)."""
    from medseg.redact import redact_secrets

    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epochs"])
    assert redact_secrets(str(err.value)) == (
        "override 'train.epochs' has no '=' (fix: write it as train.epochs=<value>, e.g. --set train.epochs=5)"
    )


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    from medseg.config import bundled_configs

    monkeypatch.chdir(tmp_path)
    assert {"brats_smoke", "brats_cpu"} <= set(bundled_configs())
    assert load_config("brats_smoke").model.name == load_config("configs/brats_smoke.yaml").model.name
    with pytest.raises(ConfigError, match="brats_smoke"):  # the hint lists the shipped names
        load_config("no_such_config")


def test_keys_that_would_be_ignored_are_rejected():
    """Modality dropout is a model keyword (model.kwargs.modality_dropout); a train.* twin would do nothing."""
    with pytest.raises(ConfigError, match=r"train\.modality_dropout"):
        load_config(None, ["train.modality_dropout=0.2"])


def test_secrets_never_leave_in_a_config_dump():
    from medseg.config import config_to_yaml, redacted_dump

    cfg = load_config(None, ["tracking.uri=postgresql://bob:hunter2@db:5432/mlflow?sslpassword=x9"])
    assert cfg.tracking.uri.endswith("x9")  # the process itself keeps the real URI
    for text in (config_to_yaml(cfg), str(redacted_dump(cfg))):
        assert "hunter2" not in text and "x9" not in text and "bob:***@db" in text


def test_a_key_with_several_forms_names_each_form_not_a_pydantic_label():
    """Was "invalid config key 'data.spacing.literal['auto','native']'", never saying three numbers were allowed."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.spacing=[1,1]"])
    assert str(err.value).startswith(
        "invalid value --set data.spacing=[1,1] (config key 'data.spacing'): as literal['auto','native']: Input should "
        "be 'auto' or 'native'; as tuple[float, float, float].2: Field required"
    )


def test_a_set_mistake_is_named_as_the_set_not_the_config_file():
    """`--config brats_smoke --set train.epochz=3` said "brats_smoke: unknown config key", and `--set
    prune.amount=1.5` alone "brats_smoke: invalid value for config key 'prune.source'": the file was blamed."""
    with pytest.raises(ConfigError) as err:
        load_config("brats_smoke", ["train.epochz=3"])
    assert str(err.value).startswith("unknown config key 'train.epochz' (--set train.epochz=3) (fix: did you mean")
    with pytest.raises(ConfigError) as err:
        load_config("brats_smoke", ["prune.amount=1.5"])
    assert str(err.value).startswith("invalid value --set prune.amount=1.5 (config key 'prune.source'): Field req")


def test_a_list_one_value_short_says_so():
    """Was "config key 'train.patch_size.2': Field required", a key that does not exist."""
    with pytest.raises(ConfigError, match=r"\(config key 'train\.patch_size'\): too few values \(no item 3\)"):
        load_config(None, ["train.patch_size=[64,64]"])


def test_a_typo_is_named_before_the_errors_it_causes():
    """`prune.amout=0.5` also leaves `prune.source` unset: the message was "invalid config key 'prune.source':
    Field required", hiding the typo."""
    with pytest.raises(ConfigError, match=r"^unknown config key 'prune\.amout' .*did you mean 'amount'\? valid keys"):
        load_config(None, ["prune.amout=0.5"])
    with pytest.raises(ConfigError, match=r"--set prune\.amount=1\.5 \(config key 'prune\.amount'\): .* less than 1"):
        load_config(None, ["prune.source=x.pt", "prune.amount=1.5"])
    # a --set of a field whose section is invalid was blamed on the config file
    with pytest.raises(ConfigError, match=r"^invalid value --set data\.intensity\.flair\.kind=window "):
        load_config("brats_smoke", ["data.intensity.flair.kind=window"])


def test_a_bad_value_names_where_it_came_from(tmp_path):
    """`medseg distill --alpha 1.5` said "brats_smoke: invalid value for config key 'distill.alpha'" and pointed to
    `config show`, whose config has no distill section: the value came from the flag."""
    flags = {"distill.alpha=1.5": "--alpha 1.5"}
    with pytest.raises(ConfigError, match=r"^invalid value --alpha 1\.5: Input should be less than or equal to 1 "):
        load_config("brats_smoke", ["distill.teacher=t.pt", "distill.alpha=1.5"], flags)
    # `prune --lr 3e-4 --set train.lr=-1`: the --set comes later and is the value applied, so it is the one named
    flags = {"train.lr=0.0003": "--lr 0.0003"}
    with pytest.raises(ConfigError, match=r"^invalid value --set train\.lr=-1 \(config key 'train\.lr'\)"):
        load_config("brats_smoke", ["train.lr=0.0003", "train.lr=-1"], flags)
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid value for config key 'train\.epochs'"):
        load_config(tmp_path / "c.yaml")  # the file's own value: the file is named


@pytest.mark.parametrize(
    "override", ["train.lr=nan", "train.max_minutes=inf", "distill.temperature=inf", "infer.threshold=nan"]
)
def test_nan_and_inf_are_refused_where_a_number_is_expected(override):
    """`distill --temperature inf` passed PositiveFloat and trained to NaN (`nan` also passes `gt=0` checks)."""
    with pytest.raises(ConfigError, match=r"Input should be a finite number"):
        load_config("brats_smoke", ["distill.teacher=t.pt", override])
