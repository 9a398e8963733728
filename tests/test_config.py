"""Config files map onto the stage dataclasses; mistakes are errors that name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from langkit.config import ConfigError, config_from_dict, load_config, save_config
from langkit.languages import LANGUAGES, PIVOT_LANGUAGES, TARGET_LANGUAGES, get_language

REPO = Path(__file__).resolve().parents[1]


def test_language_table():
    assert TARGET_LANGUAGES == ("wol_Latn", "bci_Latn", "swh_Latn", "lin_Latn")
    assert PIVOT_LANGUAGES == ("fra_Latn", "eng_Latn")
    assert get_language("wol_Latn").hub_code == "wo"
    assert get_language("bci_Latn").hub_code == "bci"  # no ISO 639-1 code for Baoulé
    assert all(LANGUAGES[lang.default_pivot].is_pivot for lang in LANGUAGES.values() if lang.default_pivot)
    with pytest.raises(ValueError, match="unknown language code 'wol'"):
        get_language("wol")


def test_demo_config_loads_with_overrides():
    cfg = load_config(REPO / "configs/demo.yaml", ["train.max_steps=2", "eval.compare_base=false", "name=x"])
    assert (cfg.train.max_steps, cfg.eval.compare_base, cfg.name) == (2, False, "x")
    # Relative source paths resolve against the config file's folder.
    assert all(Path(s.path).is_file() for s in cfg.corpus.sources)


def test_every_shipped_config_loads():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"train": {"max_step": 3}}, [], "unknown config key 'train.max_step'"),
        ({"corpus": {"sources": [{"path": "x", "language": "wol_Latn", "colour": 1}]}}, [],
         r"unknown config key 'corpus.sources\[0\].colour'"),
        ({}, ["train.lora_alpha=-1"], "train.lora_alpha must be > 0, got -1"),
        ({}, ["train.max_steps=many"], "train.max_steps must be of type int"),
        ({}, ["eval"], "must look like key=value"),
        ({"languages": ["fra_Latn"]}, [], "fra_Latn is a pivot language"),
        ({"corpus": {"sources": [{"path": "x", "language": "xyz"}]}}, [], r"corpus.sources\[0\].language"),
        ({"corpus": {"sources": [{"path": "x", "language": "wol_Latn", "format": "docx"}]}}, [],
         r"corpus.sources\[0\].format"),
        ({"publish": {"license": "Apache-2.0"}}, [], r"publish.license must be a Hub licence id in lower case"),
    ],
)
def test_config_errors_name_the_key(data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, overrides)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs/demo.yaml", ["train.learning_rate=0.01"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_int_is_accepted_for_float_fields():
    assert config_from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0
