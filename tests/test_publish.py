"""Stage 5: the release folder, its model card and manifest, and a push/download round trip through a
local server that speaks the Hub's HTTP API (tests/hub_server.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard, constants
from safetensors.numpy import load_file, save_file

from langkit import publish
from langkit.config import RunConfig, SourceConfig, config_from_dict, save_config
from langkit.publish import (
    ManifestError,
    PublishError,
    VerificationError,
    build_release,
    download_release,
    push_release,
    verify_release,
)
from langkit.rundir import RunDir
from langkit.utils import sha256_file
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401  (registers the hub_server fixture)

CHRF_SIG = "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"
BLEU_SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
REPO = "langkit-test/wolof-swahili-lora"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach the real Hub; the hub_server fixture lifts this for its own server only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _result(system: str, src: str, tgt: str, chrf: float, bleu: float, ci95: dict | None = None) -> dict:
    chrf_entry: dict = {"score": chrf, "signature": CHRF_SIG, **({"ci95": ci95} if ci95 else {})}
    return {
        "system": system, "direction": f"{src}-{tgt}", "source_language": src, "target_language": tgt, "n": 6,
        "metrics": {"chrf++": chrf_entry, "bleu": {"score": bleu, "signature": BLEU_SIG}},
    }


def make_run(root: Path, *, with_report: bool = True, chrf: float = 23.41) -> tuple[RunDir, RunConfig]:
    """A run directory as the four earlier stages leave it, small and written inline."""
    run_dir = RunDir(root)
    cfg = config_from_dict({"name": "demo", "languages": ["wol_Latn", "swh_Latn"], "train": {"max_steps": 2}})
    run_dir.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir.config)

    run_dir.adapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    save_file({
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal((8, 64)).astype(np.float32),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((64, 8), np.float32),
    }, str(run_dir.adapter / "adapter_model.safetensors"))
    (run_dir.adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "base_model_name_or_path": "tiny"}))
    (run_dir.adapter / "README.md").write_text("---\nlibrary_name: peft\n---\n# placeholder written by PEFT\n")

    run_dir.tokenizer.mkdir(parents=True)
    (run_dir.tokenizer / "tokenizer.json").write_text(json.dumps(
        {"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "ñ": 1, "ñaa": 201088}, "merges": [["ñ", "aa"]]}},
        ensure_ascii=False), encoding="utf-8")
    (run_dir.tokenizer / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 131072}))
    run_dir.new_tokens.parent.mkdir(parents=True, exist_ok=True)
    run_dir.new_tokens.write_text(json.dumps([
        {"token": "ñaa", "id": 201088, "base_ids": [3, 64]},
        {"token": "kwa", "id": 201089, "base_ids": [74, 10]},
    ], ensure_ascii=False), encoding="utf-8")

    run_dir.corpus.mkdir(parents=True)
    # the source entries as the corpus stage writes them (corpus/build.py)
    (run_dir.corpus / "stats.json").write_text(json.dumps({"sources": [
        {"name": "wol-fixture", "path": "/home/someone/private/wol.tsv", "format": "tsv", "license": "cc-by-4.0",
         "redistribution": "open", "language": "wol_Latn", "pivot_language": "fra_Latn", "kept": 40},
        {"name": "swh-fixture", "path": "langkit-test/swh-parallel", "format": "hf", "license": "cc0-1.0",
         "redistribution": "open", "language": "swh_Latn", "pivot_language": "eng_Latn", "kept": 38},
    ]}))
    (run_dir.train / "metadata.json").write_text(json.dumps({
        "base_model": "tiny", "steps": 2, "tokens_seen": 4321, "wall_time_s": 3.5, "lora_r": 8, "lora_alpha": 16}))
    if with_report:
        run_dir.eval.mkdir(parents=True)
        (run_dir.report).write_text(json.dumps({
            "model": "tiny", "adapter": "train/adapter", "test_set": "corpus/dataset/test.parquet",
            "adapter_sha256": sha256_file(run_dir.adapter_weights), "tokenizer_sha256": sha256_file(run_dir.tokenizer_file),
            "results": [
                _result("langkit", "fra_Latn", "wol_Latn", chrf, 1.2, ci95={"mean": 23.3, "half_width": 2.04,
                                                                         "signature": "nrefs:1|bs:1000|seed:12345"}),
                _result("langkit", "eng_Latn", "swh_Latn", 31.07, 4.5),
                _result("base", "fra_Latn", "wol_Latn", 11.5, 0.3),
                _result("base", "eng_Latn", "swh_Latn", 19.25, 0.9),
            ]}))
    return run_dir, cfg


def pushed_run(tmp_path: Path, hub_server: HubServer) -> tuple[RunDir, RunConfig, Path]:
    """A run directory, its release, and that release pushed to REPO on the test server."""
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    push_release(release, REPO, endpoint=hub_server.endpoint, token=hub_server.token)
    return run_dir, cfg, release


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def card_metadata(release: Path) -> tuple[dict, str]:
    text = (release / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end]), text[end + 5:]


def expected_files(run_dir: RunDir) -> set[str]:
    """What a release of ``make_run`` holds: the tokenizer folder whole (wherever new_tokens.json lives)."""
    tokenizer = {f"tokenizer/{p}" for p in files_of(run_dir.tokenizer)}
    assert {"tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"} <= tokenizer
    top = {"adapter_model.safetensors", "adapter_config.json", "new_tokens.json", "langkit_config.yaml", "README.md",
           "manifest.json"}
    return top | tokenizer | ({"eval_report.json"} if run_dir.report.exists() else set())


# --------------------------------------------------------------------------------------------------
# Building and verifying
# --------------------------------------------------------------------------------------------------


def test_release_holds_the_stage_outputs(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    assert release == run_dir.release
    assert set(files_of(release)) == expected_files(run_dir)
    # copied byte for byte, adapter at the top level, tokenizer under tokenizer/
    assert (release / "adapter_model.safetensors").read_bytes() == (run_dir.adapter / "adapter_model.safetensors").read_bytes()
    assert load_file(str(release / "adapter_model.safetensors")).keys() == load_file(
        str(run_dir.adapter / "adapter_model.safetensors")).keys()
    assert (release / "tokenizer/tokenizer.json").read_bytes() == (run_dir.tokenizer / "tokenizer.json").read_bytes()
    assert (release / "new_tokens.json").read_bytes() == run_dir.new_tokens.read_bytes()
    assert (release / "eval_report.json").read_bytes() == run_dir.report.read_bytes()
    assert config_from_dict(yaml.safe_load((release / "langkit_config.yaml").read_text())) == cfg
    # local source paths are published as file names only
    cfg.corpus.sources = [SourceConfig(path=str(tmp_path / "private" / "wol.tsv"), format="tsv", language="wol_Latn")]
    save_config(cfg, run_dir.config)  # as the corpus stage records what it read
    released = yaml.safe_load((build_release(run_dir, cfg) / "langkit_config.yaml").read_text())
    assert released["corpus"]["sources"][0]["path"] == "wol.tsv"
    assert str(tmp_path) not in (release / "langkit_config.yaml").read_text()
    assert "placeholder written by PEFT" not in (release / "README.md").read_text()


def test_model_card_metadata_and_text(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    meta, body = card_metadata(release)

    assert meta["language"] == ["wo", "sw", "fr", "en"]  # targets, then the pivots the run used
    assert meta["license"] == "apache-2.0"
    assert meta["base_model"] == "tiny"
    assert meta["library_name"] == "peft"
    assert {"lora", "gpt-oss", "translation", "langkit"} <= set(meta["tags"])
    # only Hub datasets are linked by id; a local file's name or path is no Hub id
    assert meta["datasets"] == ["langkit-test/swh-parallel"]

    # model-index: one entry per direction, the langkit system's chrF++ (never the base model's)
    (index,) = meta["model-index"]
    by_direction = {r["dataset"]["config"]: r for r in index["results"]}
    assert set(by_direction) == {"fra_Latn-wol_Latn", "eng_Latn-swh_Latn"}
    for direction, chrf in (("fra_Latn-wol_Latn", 23.41), ("eng_Latn-swh_Latn", 31.07)):
        entry = by_direction[direction]
        assert entry["task"]["type"] == "translation"
        assert entry["dataset"]["split"] == "test" and "test" in entry["dataset"]["name"]
        metrics = {m["type"]: m for m in entry["metrics"]}
        assert metrics["chrf"]["name"] == "chrF++"
        assert metrics["chrf"]["value"] == chrf
        assert metrics["chrf"]["args"]["signature"] == CHRF_SIG

    # huggingface_hub reads the card back into the same eval results
    card = ModelCard.load(release / "README.md")
    assert sorted(r.metric_value for r in card.data.eval_results if r.metric_type == "chrf") == [23.41, 31.07]

    # the readable part: signatures, both systems' scores, training facts, how to load and verify, tiny warning
    assert CHRF_SIG in body and BLEU_SIG in body
    assert "23.4 ± 2.0" in body and "11.5" in body and "31.1" in body
    assert "nrefs:1|bs:1000|seed:12345" in body  # the bootstrap interval's own signature
    assert "4,321" in body and "r = 8" in body and "alpha = 16" in body
    assert "PeftModel.from_pretrained" in body and "tokenizer" in body and "resize_token_embeddings(201090)" in body
    assert "langkit publish verify" in body
    assert "Test model" in body and "random" in body
    assert "cc-by-4.0" in body and "cc0-1.0" in body
    assert "/home/someone" not in body and "Restricted data" not in body
    assert "Baoulé" not in meta["language"]


def test_card_without_eval_report(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run", with_report=False)
    release = build_release(run_dir, cfg)
    meta, body = card_metadata(release)
    assert "model-index" not in meta
    assert "No evaluation report" in body
    assert "eval_report.json" not in files_of(release)
    assert verify_release(release).ok


def test_manifest_verifies_and_catches_changes(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["format"] == "langkit-manifest/1" and manifest["algorithm"] == "sha256"
    expected = expected_files(run_dir)
    assert list(manifest["files"]) == sorted(expected - {"manifest.json"})
    assert manifest["files"]["new_tokens.json"]["size"] == run_dir.new_tokens.stat().st_size

    report = verify_release(release)
    assert report.ok and report.checked == len(expected) - 1
    assert "OK" in report.summary()

    # the Hub's extras are tolerated
    (release / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (release / ".cache/huggingface/download").mkdir(parents=True)
    (release / ".cache/huggingface/download/README.md.metadata").write_text("x")
    assert verify_release(release).ok

    # one byte flipped, same size
    weights = release / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (release / "tokenizer/tokenizer_config.json").unlink()
    (release / "tokenizer/extra.json").write_text("{}")
    report = verify_release(release)
    assert not report.ok
    assert report.mismatched == ["adapter_model.safetensors"]
    assert report.missing == ["tokenizer/tokenizer_config.json"]
    assert report.unexpected == ["tokenizer/extra.json"]
    summary = report.summary()
    assert "adapter_model.safetensors" in summary and "tokenizer/extra.json" in summary


def test_manifest_absent_or_malformed(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    manifest_path = release / "manifest.json"
    good = manifest_path.read_text()

    for broken in ("{not json", "[]", json.dumps({**json.loads(good), "format": "other/2"}),
                   json.dumps({**json.loads(good), "files": {"../outside": {"sha256": "0" * 64, "size": 1}}}),
                   json.dumps({**json.loads(good), "files": {"README.md": {"sha256": "abc", "size": 1}}})):
        manifest_path.write_text(broken)
        with pytest.raises(ManifestError, match="manifest.json"):
            verify_release(release)
    manifest_path.unlink()
    with pytest.raises(ManifestError, match="not a langkit release"):
        verify_release(release)


def test_release_carries_the_recorded_config_and_refuses_contradicting_overrides(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """langkit_config.yaml and the card come from RUN/config.yaml, as the stages recorded it: a config that
    contradicts a stage that ran is refused (nothing written), through the API and the command line; only
    publish.*, keys that never change a stage's files, and the sections of stages that did not run may differ."""
    import copy

    from langkit.cli import main

    run_dir, cfg = make_run(tmp_path / "run", with_report=False)  # no eval/: the eval stage did not run
    recorded = run_dir.config.read_bytes()
    relabelled = copy.deepcopy(cfg)
    relabelled.train.lora_r, relabelled.languages = 64, ["wol_Latn"]
    with pytest.raises(PublishError, match=r'languages: \["wol_Latn", "swh_Latn"\] recorded, \["wol_Latn"\] given; '
                                           rf"train\.lora_r: {cfg.train.lora_r} recorded, 64 given"):
        build_release(run_dir, relabelled)
    assert not run_dir.release.exists()
    assert main(["-q", "publish", "build", str(run_dir.config), "--out", str(run_dir.root), "train.lora_r=64"]) == 1
    assert "train.lora_r" in capsys.readouterr().err
    assert run_dir.config.read_bytes() == recorded and not run_dir.release.exists()

    allowed = copy.deepcopy(cfg)
    allowed.publish.license, allowed.train.save_every, allowed.corpus.workers = "mit", 7, 3
    allowed.eval.max_items = 5
    release = build_release(run_dir, allowed)
    carried = config_from_dict(yaml.safe_load((release / "langkit_config.yaml").read_text()))
    expected = copy.deepcopy(cfg)
    expected.publish.license = "mit"
    assert carried == expected
    assert card_metadata(release)[0]["license"] == "mit"


def test_rebuild_replaces_the_release(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    build_release(run_dir, cfg)
    (run_dir.release / "stale.bin").write_bytes(b"old")
    run_dir.report.unlink()
    release = build_release(run_dir, cfg)
    assert set(files_of(release)) == expected_files(run_dir)
    assert "eval_report.json" not in files_of(release)
    assert verify_release(release).ok
    leftovers = [p.name for p in run_dir.root.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_missing_stage_output_names_the_stage(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    (run_dir.adapter / "adapter_config.json").unlink()
    with pytest.raises(PublishError, match="adapter_config.json"):
        build_release(run_dir, cfg)
    shutil.rmtree(run_dir.tokenizer)
    with pytest.raises(FileNotFoundError, match="tokenizer stage"):
        build_release(run_dir, cfg)
    assert not run_dir.release.exists()


def test_build_refuses_an_adapter_without_weights_or_a_tokenizer_without_its_file(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    (run_dir.tokenizer / "tokenizer.json").unlink()
    with pytest.raises(PublishError, match=r"tokenizer\.json.*tokenizer stage"):
        build_release(run_dir, cfg)
    run_dir, cfg = make_run(tmp_path / "run2")
    (run_dir.adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(PublishError, match=r"adapter_model\.safetensors.*train stage"):
        build_release(run_dir, cfg)
    assert not run_dir.release.exists()


def test_build_refuses_scores_of_another_adapter_or_tokenizer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The train (or tokenizer) stage ran again after eval: the card would show the old adapter's scores.
    run_dir, cfg = make_run(tmp_path / "run")
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((8, 64), np.float32)},
              str(run_dir.adapter_weights))
    with pytest.raises(PublishError, match=r"report\.json scored another adapter_model\.safetensors .*train stage.*rerun the eval"):
        build_release(run_dir, cfg)
    run_dir, cfg = make_run(tmp_path / "run2")
    run_dir.tokenizer_file.write_text(run_dir.tokenizer_file.read_text("utf-8") + "\n", encoding="utf-8")
    with pytest.raises(PublishError, match=r"scored another tokenizer\.json .*tokenizer stage"):
        build_release(run_dir, cfg)
    assert not run_dir.release.exists()
    # A report from before these digests were recorded: published, with a warning that it cannot be checked.
    report = json.loads(run_dir.report.read_text("utf-8"))
    del report["adapter_sha256"], report["tokenizer_sha256"]
    run_dir.report.write_text(json.dumps(report), encoding="utf-8")
    with caplog.at_level("WARNING", logger="langkit.publish"):
        build_release(run_dir, cfg)
    assert sum("cannot check" in r.getMessage() for r in caplog.records) == 2


def test_missing_eval_report_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir, cfg = make_run(tmp_path / "run", with_report=False)
    with caplog.at_level("WARNING", logger="langkit.publish"):
        build_release(run_dir, cfg)
    assert any(str(run_dir.report) in r.getMessage() and "eval" in r.getMessage() for r in caplog.records)


def test_card_names_the_scored_split_and_restricted_data(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    report = json.loads(run_dir.report.read_text())
    report.update(test_set="corpus/dataset/dev.parquet", task={"name": "translation", "split": "dev"})
    run_dir.report.write_text(json.dumps(report))
    stats = json.loads((run_dir.corpus / "stats.json").read_text())
    stats["sources"][0].update(license="cc-by-nc-4.0", redistribution="non-commercial")
    (run_dir.corpus / "stats.json").write_text(json.dumps(stats))

    meta, body = card_metadata(build_release(run_dir, cfg))
    splits = {r["dataset"]["split"] for r in meta["model-index"][0]["results"]}
    assert splits == {"dev"}  # the eval task scored the dev split, not the test split
    assert "held-out dev split" in body and "small dev split held out" in body and "test split" not in body
    assert "| wol-fixture | Wolof (aligned with French) | cc-by-nc-4.0 | non-commercial | 40 |" in body
    assert "**Restricted data.** wol-fixture may not be used commercially" in body
    assert "swh-fixture may not" not in body


def test_card_shows_chrf_flags_and_an_eval_suite_table(tmp_path: Path) -> None:
    """chrF++, chrF and BLEU per direction with their signatures and the eval's flags; with publish.eval_results,
    a langkit eval suite's tasks, systems (no local paths or endpoint addresses), scores and paired tests."""
    run_dir, cfg = make_run(tmp_path / "run")
    report = json.loads(run_dir.report.read_text())
    chrf2 = {"score": 20.5, "signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"}
    for result in report["results"]:
        result["metrics"]["chrf"] = chrf2
        result["flags"] = {"empty": 0, "copied_source": 0, "most_common": {"text": "x", "count": 1}, "flags": []}
    report["results"][2]["flags"] = {"empty": 0, "copied_source": 0, "most_common": {"text": ".", "count": 6},
                                     "flags": ["constant"]}
    run_dir.report.write_text(json.dumps(report))
    suite = {
        "format": "langkit-eval-suite/1", "limit": 0, "baseline": "base",
        "tasks": [{"name": "flores200-devtest", "title": "FLORES-200 devtest", "license": "cc-by-sa-4.0"}],
        "systems": {
            "base": {"kind": "hf", "model": "openai/gpt-oss-20b", "adapter": None},
            "adapted": {"kind": "run", "run": str(tmp_path / "private-run"), "model": "tiny",
                        "adapter_sha256": sha256_file(run_dir.adapter_weights)},
            "served": {"kind": "openai", "url": "http://10.1.2.3:8000/v1", "model": str(tmp_path / "wolof-merged")},
        },
        "results": [{"task": "flores200-devtest", "system": name, "direction": "eng_Latn-wol_Latn",
                     "source_language": "eng_Latn", "target_language": "wol_Latn", "n": 6,
                     "metrics": {"chrf++": {"score": score, "signature": CHRF_SIG}, "chrf": chrf2,
                                 "bleu": {"score": 1.0, "signature": BLEU_SIG}},
                     "flags": {"flags": []}} for name, score in (("base", 10.0), ("adapted", 30.25), ("served", 30.25))],
        "paired": [{"task": "flores200-devtest", "direction": "eng_Latn-wol_Latn", "baseline_system": "base",
                    "compared_system": "adapted", "metric": "chrf++", "baseline": 10.0, "system": 30.25,
                    "p_value": 0.001, "n_samples": 1000, "signature": "nrefs:1|bs:1000|seed:12345"}],
    }
    (tmp_path / "results.json").write_text(json.dumps(suite))
    cfg.publish.eval_results = str(tmp_path / "results.json")
    release = build_release(run_dir, cfg)
    _, body = card_metadata(release)
    assert "| Direction | System | Segments | chrF++ | chrF | BLEU | Note |" in body
    assert "| French → Wolof (`fra_Latn-wol_Latn`) | base | 6 | 11.5 | 20.5 | 0.3 | ⚠ one output repeated ('.' for 6/6) |" in body
    assert f"- chrF: `{chrf2['signature']}`" in body and f"- chrF++: `{CHRF_SIG}`" in body
    assert "| flores200-devtest | English → Wolof | adapted | 6 | 30.2 | 20.5 | 1.0 |  |" in body
    assert "- `flores200-devtest`: FLORES-200 devtest, licence cc-by-sa-4.0" in body
    assert "- `adapted`: this release's adapter on `tiny`" in body
    assert "- `served`: an OpenAI-compatible endpoint serving `wolof-merged`" in body
    assert "`adapted` 30.2 vs 10.0, p = 0.001" in body
    assert str(tmp_path) not in body and "10.1.2.3" not in body
    assert json.loads((release / "eval_suite_results.json").read_text()) == suite
    assert yaml.safe_load((release / "langkit_config.yaml").read_text())["publish"]["eval_results"] == \
        "eval_suite_results.json"
    assert verify_release(release).ok
    (tmp_path / "results.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(PublishError, match="not a langkit eval suite results.json"):
        build_release(run_dir, cfg)


def test_hub_actions_refuse_offline_mode(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        push_release(release, REPO, endpoint="http://127.0.0.1:9")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        download_release(REPO, tmp_path / "down", endpoint="http://127.0.0.1:9")


# --------------------------------------------------------------------------------------------------
# Push and download through the local Hub
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("xet", [False, True], ids=["inline-upload", "xet-pipeline"])
def test_push_download_round_trip(tmp_path: Path, hub_server: HubServer, monkeypatch: pytest.MonkeyPatch,
                                  xet: bool) -> None:
    # With hf_xet installed (the default for users), upload_folder takes its streamed pipeline; the
    # server answers "regular" to every preupload, so both paths end in inline commits.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    endpoint, token = hub_server.endpoint, hub_server.token

    commit = push_release(release, REPO, endpoint=endpoint, token=token, tag="v0.1.0")
    assert len(commit) == 40 and int(commit, 16) >= 0
    remote, v1_files = hub_server.files(REPO), files_of(release)
    release_v1 = shutil.copytree(release, tmp_path / "release-v1")  # the rebuilds below replace run_dir.release
    assert set(remote) == set(v1_files) | {".gitattributes"}
    assert all(remote[path] == data for path, data in v1_files.items())
    assert hub_server.tags(REPO) == {"v0.1.0": commit}

    down = tmp_path / "down"
    report = download_release(REPO, down, endpoint=endpoint, token=token)
    assert report.ok and report.checked == len(expected_files(run_dir)) - 1
    downloaded = {p: d for p, d in files_of(down).items() if not p.startswith(".cache/")}
    assert downloaded == {**v1_files, ".gitattributes": remote[".gitattributes"]}

    # a second release without the eval report: the remote must mirror it (a stale file would fail
    # the next download's verification)
    run_dir.report.unlink()
    release2 = build_release(run_dir, cfg)
    commit2 = push_release(release2, REPO, endpoint=endpoint, token=token, tag="v0.2.0")
    assert commit2 != commit
    assert "eval_report.json" not in hub_server.files(REPO)
    assert download_release(REPO, tmp_path / "down-main", endpoint=endpoint, token=token).ok
    assert files_of(tmp_path / "down-main")["README.md"] == (release2 / "README.md").read_bytes()

    # the old tag still gives the old release, byte for byte
    old = tmp_path / "down-v0.1.0"
    assert download_release(REPO, old, revision="v0.1.0", endpoint=endpoint, token=token).ok
    assert {p: d for p, d in files_of(old).items() if not p.startswith(".")} == v1_files

    # pushing the same release again: no new commit, and re-tagging it with the tag it has is fine
    assert push_release(release2, REPO, endpoint=endpoint, token=token, tag="v0.2.0") == commit2
    # but a tag never moves to another commit, and a refused tag leaves main as it was
    run_dir, _ = make_run(tmp_path / "run3", chrf=40.0)
    release3 = build_release(run_dir, cfg)
    with pytest.raises(PublishError, match="already exists"):
        push_release(release3, REPO, endpoint=endpoint, token=token, tag="v0.1.0")
    assert hub_server.history(REPO)[0].oid == commit2
    assert hub_server.files(REPO)["README.md"] == (release2 / "README.md").read_bytes()
    assert hub_server.tags(REPO) == {"v0.1.0": commit, "v0.2.0": commit2}
    # re-pushing the first release with its own tag is fine: main holds it again, the tag stays put
    commit4 = push_release(release_v1, REPO, endpoint=endpoint, token=token, tag="v0.1.0")
    assert commit4 not in (commit, commit2) and hub_server.history(REPO)[0].oid == commit4
    assert {p: d for p, d in hub_server.files(REPO).items() if p != ".gitattributes"} == v1_files
    assert hub_server.tags(REPO) == {"v0.1.0": commit, "v0.2.0": commit2}


def test_private_push_refuses_an_existing_public_repo(tmp_path: Path, hub_server: HubServer) -> None:
    run_dir, cfg, release = pushed_run(tmp_path, hub_server)  # public
    before = hub_server.history(REPO)[0].oid
    (run_dir.adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    release = build_release(run_dir, cfg)
    with pytest.raises(PublishError, match="public"):
        push_release(release, REPO, endpoint=hub_server.endpoint, token=hub_server.token, private=True)
    assert hub_server.history(REPO)[0].oid == before  # nothing uploaded to the public repo

    # a new private repo is created private, and a private push into it works (again: no-op)
    private_repo = "langkit-test/private-lora"
    commit = push_release(release, private_repo, endpoint=hub_server.endpoint, token=hub_server.token, private=True)
    assert hub_server.repos[("model", private_repo)].private
    assert push_release(release, private_repo, endpoint=hub_server.endpoint, token=hub_server.token,
                        private=True) == commit


def test_push_does_not_overwrite_a_push_made_meanwhile(tmp_path: Path, hub_server: HubServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    run_dir, cfg, release = pushed_run(tmp_path, hub_server)
    real = HfApi.upload_folder
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "NOTES.md").write_text("a colleague's push\n", encoding="utf-8")

    def colleague_first(self: HfApi, **kwargs: object) -> object:
        monkeypatch.setattr(HfApi, "upload_folder", real)
        real(self, repo_id=REPO, repo_type="model", folder_path=theirs, commit_message="colleague")
        return real(self, **kwargs)  # ours, now on top of a branch that moved

    monkeypatch.setattr(HfApi, "upload_folder", colleague_first)
    run_dir.report.unlink()
    with pytest.raises(PublishError, match=r"changed while this release was being pushed.*nothing was committed"):
        push_release(build_release(run_dir, cfg), REPO, endpoint=hub_server.endpoint, token=hub_server.token)
    remote = hub_server.files(REPO)
    assert "NOTES.md" in remote and "eval_report.json" in remote  # their file kept, our deletion not applied


def test_interrupted_download_leaves_nothing_and_can_be_rerun(tmp_path: Path, hub_server: HubServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    run_dir, cfg, release = pushed_run(tmp_path, hub_server)
    real = huggingface_hub.snapshot_download

    def interrupted(*args: object, **kwargs: object) -> str:
        real(*args, **kwargs, allow_patterns=["README.md", "tokenizer/*"])  # some files arrive...
        raise ConnectionError("connection reset by peer")  # ...then the connection drops

    monkeypatch.setattr(huggingface_hub, "snapshot_download", interrupted)
    down = tmp_path / "down"
    with pytest.raises(PublishError, match=r"cannot download .*127\.0\.0\.1.*connection reset.*Nothing was kept"):
        download_release(REPO, down, endpoint=hub_server.endpoint, token=hub_server.token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no half-downloaded release anywhere

    # Into an existing empty folder (a mount point, "."): filled in place, never renamed; nothing kept either.
    mount = tmp_path / "mount"
    mount.mkdir()
    with pytest.raises(PublishError, match="connection reset"):
        download_release(REPO, mount, endpoint=hub_server.endpoint, token=hub_server.token)
    assert list(mount.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["mount", "run"]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", real)
    for folder in (down, mount):
        inode = folder.stat().st_ino if folder.exists() else None
        report = download_release(REPO, folder, endpoint=hub_server.endpoint, token=hub_server.token)
        assert report.ok and report.path == folder
        assert {p: d for p, d in files_of(folder).items() if not p.startswith(".")} == files_of(release)
        assert inode is None or folder.stat().st_ino == inode  # the existing folder itself was kept
    assert not (mount / ".tmp-download").exists()


def test_push_refuses_a_broken_release(tmp_path: Path, hub_server: HubServer) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    (release / "new_tokens.json").write_text("[]")
    with pytest.raises(VerificationError, match="new_tokens.json") as info:
        push_release(release, REPO, endpoint=hub_server.endpoint, token=hub_server.token)
    assert info.value.report.mismatched == ["new_tokens.json"]
    assert hub_server.requests == []  # refused before any request
    (release / "manifest.json").unlink()
    with pytest.raises(ManifestError):
        push_release(release, REPO, endpoint=hub_server.endpoint, token=hub_server.token)
    assert hub_server.requests == []


def test_download_catches_a_file_altered_on_the_hub(tmp_path: Path, hub_server: HubServer) -> None:
    run_dir, cfg, release = pushed_run(tmp_path, hub_server)
    # rewrite one file behind the manifest's back, as a compromised mirror would
    repo = hub_server.repos[("model", REPO)]
    head = repo.commits[repo.branches["main"]]
    head.files["adapter_config.json"] = b'{"peft_type": "LORA", "r": 64}'
    with pytest.raises(VerificationError, match="adapter_config.json") as info:
        download_release(REPO, tmp_path / "down", endpoint=hub_server.endpoint, token=hub_server.token)
    assert info.value.report.mismatched == ["adapter_config.json"]
    # nothing unverified is left where the release was asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    (tmp_path / "down").mkdir()
    (tmp_path / "down" / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match="not an empty folder"):
        download_release(REPO, tmp_path / "down", endpoint=hub_server.endpoint, token=hub_server.token)
    assert [p.name for p in (tmp_path / "down").iterdir()] == ["notes.txt"]


def test_run_builds_and_pushes_with_the_default_endpoint(tmp_path: Path, hub_server: HubServer) -> None:
    # The hub_server fixture points HF_ENDPOINT / HF_TOKEN at the local server, as a user's shell would.
    run_dir, cfg = make_run(tmp_path / "run")
    cfg.publish.repo_id = REPO
    cfg.publish.tag = "v1"
    release = publish.run(cfg, run_dir)
    assert release == run_dir.release and verify_release(release).ok
    assert hub_server.tags(REPO) == {"v1": hub_server.history(REPO)[0].oid}
    assert "langkit release of run demo" in hub_server.history(REPO)[0].title
    meta, _ = card_metadata(release)
    assert meta["model-index"][0]["name"] == "wolof-swahili-lora"
