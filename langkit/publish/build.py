"""Building the release folder from a run directory."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from langkit.config import FREE_TRAIN_KEYS, ConfigError, RunConfig, config_from_dict, save_config
from langkit.publish.card import _gather, _model_card, _public_base_model, read_suite_results
from langkit.publish.manifest import (
    CARD_NAME,
    CONFIG_NAME,
    EVAL_REPORT_NAME,
    EVAL_SUITE_NAME,
    NEW_TOKENS_NAME,
    TOKENIZER_DIR,
    PublishError,
    unsafe_files,
    write_manifest,
)
from langkit.publish.signing import (
    THROWAWAY,
    fingerprint_of,
    generate_key_pair,
    load_private_key,
    sign_release,
)
from langkit.rundir import RunDir
from langkit.utils import atomic_write_text, get_logger, replace_dir, sha256_file, temp_dir

log = get_logger("publish")


def _shareable_config(cfg: RunConfig) -> RunConfig:
    """The resolved config with local source files named by file name only: their absolute paths
    (home folders, user names) mean nothing to others and are not for publishing."""
    shared = copy.deepcopy(cfg)
    for source in shared.corpus.sources:
        if source.format != "hf":
            source.path = Path(source.path).name
            if source.pivot_path:
                source.pivot_path = Path(source.pivot_path).name
    if shared.publish.sign_key and shared.publish.sign_key != THROWAWAY:
        shared.publish.sign_key = Path(shared.publish.sign_key).name
    if shared.publish.eval_results:
        shared.publish.eval_results = EVAL_SUITE_NAME  # the copy the release carries
    shared.corpus.dedup.decontaminate_against = [Path(p).name for p in shared.corpus.dedup.decontaminate_against]
    shared.train.model = _public_base_model(shared.train.model)  # a local folder by its name only
    shared.tokenizer.base = _public_base_model(shared.tokenizer.base)
    return shared


# Keys that decide where, how fast or how a stage resumes, never what it writes: a publish may give them
# other values than the stages ran with.
_FREE_KEYS = frozenset({
    "corpus.workers", "corpus.only_source", "corpus.executor", *(f"train.{key}" for key in FREE_TRAIN_KEYS),
})
# The stages whose config section the release takes from RUN/config.yaml, with the folder they write.
_RECORDED_STAGES = ("corpus", "tokenizer", "train", "eval")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def published_config(run_dir: RunDir, cfg: RunConfig) -> RunConfig:
    """The config a release carries: ``RUN/config.yaml`` as the earlier stages recorded it (what made the
    release's files), with this publish's own ``publish`` section. A ``cfg`` that contradicts what a stage
    that ran recorded (an override such as ``train.lora_r=64`` at publish time, another config file) is
    refused, naming each key, since the release and its card would describe files it did not make. Local
    paths are compared by file name (a run moved to another machine still publishes)."""
    path = run_dir.config
    if not path.is_file():
        raise PublishError(f"{path} is missing: a release carries the config its stages recorded there (langkit "
                           "writes it when a stage runs); rerun the stages with langkit, or put the config they "
                           "ran with at that path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        recorded = config_from_dict(data if isinstance(data, dict) else {})
    except (yaml.YAMLError, ConfigError) as err:
        raise PublishError(f"{path} is not a langkit run config ({err}): it cannot say what made this run's "
                           "files") from None
    folders = {"corpus": run_dir.corpus, "tokenizer": run_dir.tokenizer_stage, "train": run_dir.train,
               "eval": run_dir.eval}
    ran = [stage for stage in _RECORDED_STAGES if folders[stage].exists()]
    was = _flat(_shareable_config(recorded).to_dict())
    given = _flat(_shareable_config(cfg).to_dict())

    def compared(key: str) -> bool:
        section = key.split(".", 1)[0]
        if key in _FREE_KEYS or section == "publish":
            return False
        return section in ran if section in _RECORDED_STAGES else bool(ran)  # name, languages: any stage

    conflicts = [key for key in sorted(set(was) | set(given)) if compared(key) and was.get(key) != given.get(key)]
    if conflicts:
        shown = "; ".join(f"{key}: {_short(was.get(key))} recorded, {_short(given.get(key))} given"
                          for key in conflicts)
        raise PublishError(f"the config given to publish contradicts what the earlier stages of {run_dir.root} "
                           f"recorded in {path}: {shown}. A release carries the config that made its files: "
                           "publish with the run's own config (only publish.* may differ), or rerun the stages "
                           "these keys belong to")
    published = copy.deepcopy(recorded)
    published.publish = copy.deepcopy(cfg.publish)
    return published


THROWAWAY_DIR = "signing"  # RUN/signing/: the throwaway key pair of publish.sign_key: throwaway


def _signing_key(cfg: RunConfig, run_dir: RunDir) -> tuple[Path, str, bool] | None:
    """The private key to sign with, its public key's fingerprint, and whether it is a throwaway key made
    for this run; None when the release is not to be signed. The key is loaded here, before any work, so
    that a missing file or a wrong passphrase is said at once."""
    name = cfg.publish.sign_key
    if not name:
        return None
    if name == THROWAWAY:
        path = run_dir.root / THROWAWAY_DIR / "throwaway.pem"
        if not path.exists():
            generate_key_pair(path, passphrase=b"")  # never encrypted: it protects nothing
        key = load_private_key(path, b"")
        log.warning("signing with a THROWAWAY key made for this run (%s, public key %s, fingerprint %s): the "
                    "signature shows that the files did not change, not who published them; sign real releases "
                    "with your own key (langkit publish keygen)", path, path.with_name("throwaway.pub.pem"),
                    fingerprint_of(key.public_key()))
        return path, fingerprint_of(key.public_key()), True
    path = Path(name)
    return path, fingerprint_of(load_private_key(path).public_key()), False


def _check_report_is_current(run_dir: RunDir, report: dict[str, Any] | None, adapter_sha256: str) -> None:
    """Refuse to publish scores that another adapter or tokenizer earned (train or tokenizer rerun after
    eval): the card would show them as this adapter's. The report records what it scored by SHA-256."""
    if report is None:
        return
    for key, path, stage in (("adapter_sha256", run_dir.adapter_weights, "train"),
                             ("tokenizer_sha256", run_dir.tokenizer_file, "tokenizer")):
        scored = report.get(key)
        if scored is None:
            log.warning("%s does not record %s (made by an older langkit): cannot check that it scored %s",
                        run_dir.report, key, path)
        elif scored != (adapter_sha256 if key == "adapter_sha256" else sha256_file(path)):
            raise PublishError(f"{run_dir.report} scored another {path.name} than {path} holds now (the {stage} "
                               "stage ran again after eval): rerun the eval stage before publishing")


def build_release(run_dir: RunDir, cfg: RunConfig) -> Path:
    """Assemble ``run_dir.release`` (adapter, tokenizer, new tokens, eval report, config, model card,
    manifest, and ``model.sig`` when ``publish.sign_key`` is set). It is built beside the old one and
    swapped in, so a rebuild replaces it cleanly."""
    adapter = run_dir.require(run_dir.adapter, "train")
    tokenizer = run_dir.require(run_dir.tokenizer, "tokenizer")
    new_tokens = run_dir.require(run_dir.new_tokens, "tokenizer")
    if not (adapter / "adapter_config.json").is_file():
        raise PublishError(f"{adapter} has no adapter_config.json: it is not a PEFT adapter folder "
                           "(rerun the train stage)")
    # without its weights the release would build and verify, and be useless: refuse it here
    if not run_dir.adapter_weights.is_file():
        raise PublishError(f"{adapter} has no {run_dir.adapter_weights.name}: the adapter's weights are missing "
                           "(rerun the train stage)")
    if not run_dir.tokenizer_file.is_file():
        raise PublishError(f"{tokenizer} has no {run_dir.tokenizer_file.name}: the extended tokenizer is missing "
                           "(rerun the tokenizer stage)")
    # pickled weights run code when loaded, and links point outside the release: neither is ever published
    refused = [f"{folder / rel}" for folder in (adapter, tokenizer) for rel in unsafe_files(folder)]
    if refused:
        raise PublishError(f"refusing to publish {', '.join(refused)}: a release holds no pickled files (.bin, "
                           ".pt, .pkl...) and no links; save the adapter as safetensors (PEFT's default) and "
                           "remove the others")
    recorded = published_config(run_dir, cfg)  # before anything is signed or written
    facts = _gather(run_dir)
    facts.adapter_sha256 = sha256_file(run_dir.adapter_weights)  # hashed once: the check and the card use it
    _check_report_is_current(run_dir, facts.report, facts.adapter_sha256)
    if cfg.publish.eval_results:
        facts.suite = read_suite_results(Path(cfg.publish.eval_results))
    signing = _signing_key(cfg, run_dir)
    if signing is not None:
        facts.signer, facts.throwaway_key = signing[1], signing[2]

    run_dir.root.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(run_dir.release)
    try:
        for item in sorted(adapter.iterdir()):
            if item.name == CARD_NAME:
                continue  # PEFT writes a placeholder card there; ours replaces it
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copyfile(item, tmp / item.name)
        shutil.copytree(tokenizer, tmp / TOKENIZER_DIR)
        shutil.copyfile(new_tokens, tmp / NEW_TOKENS_NAME)
        if facts.report is not None:
            shutil.copyfile(run_dir.report, tmp / EVAL_REPORT_NAME)
        if cfg.publish.eval_results:
            shutil.copyfile(cfg.publish.eval_results, tmp / EVAL_SUITE_NAME)
        save_config(_shareable_config(recorded), tmp / CONFIG_NAME)
        atomic_write_text(tmp / CARD_NAME, str(_model_card(recorded, facts)))
        manifest = write_manifest(tmp)
        if signing is not None:
            sign_release(tmp, signing[0], b"" if signing[2] else None)  # over every file, the manifest too
        replace_dir(tmp, run_dir.release)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(entry["size"] for entry in manifest["files"].values())
    log.info("release: %d files, %.1f MB in %s%s", len(manifest["files"]), size / 1e6, run_dir.release,
             f", signed by {signing[1]}" if signing else " (not signed: set publish.sign_key to sign it)")
    return run_dir.release
