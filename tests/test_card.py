"""The dataset card (corpus/dataset/README.md) and its plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from langkit.config import SourceConfig
from langkit.corpus import build_corpus
from langkit.corpus.card import PLOTS, render_card, size_category, write_dataset_card

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def card_parts(path: Path) -> tuple[dict[str, Any], str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("card")
    (d / "wol.tsv").write_text(
        "wol\tfra\n"
        "Dafa neex lool\tC'est très bon\n"
        "Maa ngi dem ca marse ba\tJe vais au marché\n"
        "Dafa neex lool\tC'est très bon\n"  # duplicate
        "\t\n",  # empty
        encoding="utf-8",
    )
    (d / "swh.jsonl").write_text(
        json.dumps({"sw": "Habari ya asubuhi rafiki yangu", "en": "Good morning my friend"}) + "\n{broken\n",
        encoding="utf-8",
    )
    sources = [
        SourceConfig(str(d / "wol.tsv"), "tsv", "wol_Latn", name="wol-tsv", license="CC-BY-SA-4.0",
                     text_field="wol", pivot_field="fra", pivot_language="fra_Latn"),
        SourceConfig(str(d / "swh.jsonl"), "jsonl", "swh_Latn", name="swh-tico", card="tico-19",
                     text_field="sw", pivot_field="en", pivot_language="eng_Latn"),
    ]  # fmt: skip
    out = d / "corpus"
    # TICO-19 is an evaluation set by its card: here it stands for any carded source, split like the others.
    stats = build_corpus(sources, ["wol_Latn", "swh_Latn"], out, 0, 0, 0, allow_eval_sources=True)
    return out, stats


def test_card_metadata_has_languages_licences_and_configs(built: tuple[Path, dict[str, Any]]) -> None:
    out, stats = built
    meta, _ = card_parts(out / "dataset" / "README.md")
    assert meta["language"] == ["wo", "sw", "fr", "en"]  # targets, then the pivots their pairs use
    assert meta["license"] == ["cc-by-sa-4.0", "cc0-1.0"]  # tico-19's licence came from its card
    assert meta["task_categories"] == ["translation", "text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    files = meta["configs"][0]["data_files"]
    assert [f["split"] for f in files] == ["train", "dev", "test"]
    assert all((out / "dataset" / f["path"]).is_file() for f in files)


def test_card_body_lists_counts_licences_and_citations(built: tuple[Path, dict[str, Any]]) -> None:
    out, stats = built
    _, body = card_parts(out / "dataset" / "README.md")
    for s in stats["sources"]:
        row = next(line for line in body.splitlines() if line.startswith(f"| {s['name']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4:8] == [s["license"], s["redistribution"], str(s["read"]), str(s["kept"])]
        assert cells[-1] == str(s["quarantined"])
    assert "| CC0-1.0 | open | swh-tico |" in body and "| CC-BY-SA-4.0 | share-alike | wol-tsv |" in body
    assert "anastasopoulos-etal-2020-tico" in body  # the card's citation
    assert "## Normalization and filters" in body
    for name in PLOTS:
        assert f"(plots/{name}.png)" in body


def test_plots_are_valid_pngs_and_rebuilds_are_identical(built: tuple[Path, dict[str, Any]]) -> None:
    out, stats = built
    plots = out / "dataset" / "plots"
    before = {p.name: p.read_bytes() for p in plots.glob("*.png")}
    assert sorted(before) == sorted(f"{name}.png" for name in PLOTS)
    for name, data in before.items():
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(plots / name) as image:
            image.verify()
        with Image.open(plots / name) as image:
            assert image.size[0] > 100 and image.size[1] > 100
    readme = (out / "dataset" / "README.md").read_bytes()
    write_dataset_card(out, stats)
    assert {p.name: p.read_bytes() for p in plots.glob("*.png")} == before
    assert (out / "dataset" / "README.md").read_bytes() == readme


def test_card_renders_other_steps_reports_and_copes_without_them(tmp_path: Path) -> None:
    stats: dict[str, Any] = {"languages": {}, "sources": [], "splits": {"train": 0, "dev": 0, "test": 0}}
    path = write_dataset_card(tmp_path, stats)  # no data at all: still a card and three plots
    meta, body = card_parts(path)
    assert meta["license"] == "unknown" and meta["language"] == []
    assert "records no other rules" in body
    assert len(list((tmp_path / "dataset" / "plots").glob("*.png"))) == 3
    stats["languages"]["lin_Latn"] = {
        "read": 3, "kept": 2, "dropped": {"empty": 1, "too_short": 0}, "quarantined": 0, "pairs": 0,
        "monolingual": 2, "splits": {"train": 2, "dev": 0, "test": 0},
        "normalization": {"texts": 3, "changed": 1, "rules": {"tones_stripped": 1},
                          "samples": {"tones_stripped": [{"before": "mbóka", "after": "mboka"}]}},
    }  # fmt: skip
    stats["filters"] = {"min_chars": 2}
    body = render_card(stats)
    assert "lin_Latn: normalization" in body and "| tones_stripped | 1 |" in body
    assert "| tones_stripped | mbóka | mboka |" in body
    assert "min_chars: 2" in body
    assert "| empty | no text left after normalization | 1 |" in body


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 250_000, 2_000_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "n>1B",
    ]  # fmt: skip
