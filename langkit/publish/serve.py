"""``langkit serve``: an OpenAI-compatible chat endpoint for an adapted model, from a run or a release.

The engine is :mod:`langkit.serve` (the servable folder: base + adapter merged, the extended tokenizer, the
harmony chat template; and the server: vLLM on a GPU, ``transformers serve`` otherwise). This module adds
what an agency needs on top: serving a **release** it downloaded or unbundled. The release is verified
first (its manifest always; the publisher's signature too when a public key is given), then the base model
named in its ``langkit_config.yaml`` (or ``base``) is loaded, resized for the release's tokenizer, the
release's adapter put on it and merged, and the servable folder is written **beside** the release
(``RELEASE-merged/`` by default), never inside it: the verified folder stays exactly as signed.

A servable folder records which release it was made from (:data:`SERVED_FROM_NAME`: the SHA-256 of the
release's manifest, which covers every file); serving the same, still-verifying release again reuses it
instead of merging again.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from langkit.config import ConfigError, RunConfig, config_from_dict
from langkit.publish.card import MERGED_SUFFIX
from langkit.publish.manifest import (
    CONFIG_NAME,
    MANIFEST_NAME,
    NEW_TOKENS_NAME,
    TOKENIZER_DIR,
    PublishError,
    VerificationError,
    verify_release,
)
from langkit.utils import get_logger, read_json, sha256_file, write_json

if TYPE_CHECKING:
    from langkit.serve import ServerHandle

log = get_logger("serve")

SERVED_FROM_NAME = "langkit_served_from.json"
"""In a servable folder made from a release: which release (manifest SHA-256), base model and key."""


# --------------------------------------------------------------------------------------------------
# What serving costs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightMemory:
    """Parameters of a gpt-oss architecture and the bytes its weights take to serve."""

    name: str
    parameters: int
    expert_parameters: int
    """The mixture-of-experts weights (``gate_up_proj`` [E, H, 2I] and ``down_proj`` [E, I, H] of every layer):
    what gpt-oss ships in MXFP4."""
    mxfp4_bytes: int
    """As released: experts in MXFP4 (4-bit values plus one 8-bit scale per 32: 4.25 bits each), the rest bf16."""
    bf16_bytes: int
    """Everything in bf16: a merged adapter, unless its experts are quantized again."""
    kv_bytes_per_token: int
    """The KV cache of one token at full attention on every layer, in bf16 (the sliding-window layers keep
    only their last ``sliding_window`` tokens, so a long context costs about half this per token)."""


def weight_memory(name: str, new_tokens: int = 0) -> WeightMemory:
    """Count the parameters of ``name`` (a key of :data:`langkit.models.ARCHITECTURES`) on the meta device (no
    memory is used), with ``new_tokens`` extra vocabulary rows in the embeddings and the output layer."""
    import torch
    from transformers import GptOssForCausalLM

    from langkit.models import ARCHITECTURES, gpt_oss_config
    from langkit.tokenizer import BASE_VOCAB_SIZE

    with torch.device("meta"):
        model = GptOssForCausalLM(gpt_oss_config(name, vocab_size=BASE_VOCAB_SIZE + new_tokens))
    total = experts = 0
    for param_name, param in model.named_parameters():
        total += param.numel()
        if param_name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            experts += param.numel()
    arch = ARCHITECTURES[name]
    kv = arch["num_hidden_layers"] * 2 * arch["num_key_value_heads"] * arch["head_dim"] * 2  # K and V, bf16
    return WeightMemory(name=name, parameters=total, expert_parameters=experts,
                        mxfp4_bytes=(experts * 17) // 32 + 2 * (total - experts), bf16_bytes=2 * total,
                        kv_bytes_per_token=kv)


# --------------------------------------------------------------------------------------------------
# A release made servable
# --------------------------------------------------------------------------------------------------


def release_config(release: Path) -> RunConfig:
    """The run config a release carries (``langkit_config.yaml``)."""
    path = Path(release) / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return config_from_dict(data if isinstance(data, dict) else {})
    except FileNotFoundError:
        raise PublishError(f"{path} not found: a langkit release carries the config of its run") from None
    except (yaml.YAMLError, ConfigError) as err:
        raise PublishError(f"{path} is not a langkit run config: {err}") from None


def default_servable_dir(release: Path) -> Path:
    release = Path(release).resolve()
    return release.parent / f"{release.name}{MERGED_SUFFIX}"


def _check_destination(release: Path, dest: Path, stamp: dict[str, Any]) -> bool:
    """Whether ``dest`` already holds the servable folder of this very release (reuse it). Refuses a
    destination inside the release, one that holds the release, and a folder langkit serve did not write."""
    if dest == release or release in dest.parents or dest in release.parents:
        raise PublishError(f"the servable folder {dest} would be inside {release} or hold it: it goes beside the "
                           "release, which stays exactly as verified (choose another --out)")
    if not dest.exists():
        return False
    served_from = dest / SERVED_FROM_NAME
    if not served_from.is_file():
        if dest.is_dir() and not any(dest.iterdir()):
            return False
        raise PublishError(f"{dest} exists and was not written by langkit serve: it is left as it is (remove it or "
                           "choose another --out)")
    try:
        return bool(read_json(served_from) == stamp and (dest / "config.json").is_file())
    except ValueError:
        return False


def load_release_model(release: Path, base: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer): the base model (``base``, else the one the release's config names, in the dtype it
    was trained in), resized for the release's tokenizer, with the release's adapter on it, in eval mode.
    Check the release first (:func:`servable_from_release` does)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from langkit.models import load_base_model, resize_for_new_tokens
    from langkit.tokenizer import load_new_tokens
    from langkit.train.model import check_vocabulary, tokenizer_size

    release = Path(release)
    cfg = release_config(release)
    name = base or cfg.train.model
    tokenizer = AutoTokenizer.from_pretrained(str(release / TOKENIZER_DIR))
    new_tokens = load_new_tokens(release / NEW_TOKENS_NAME)
    try:
        model = load_base_model(name, cfg.train.dtype, seed=cfg.train.seed)
    except OSError as err:
        raise PublishError(f"cannot load the base model {name!r} the release was trained on ({err}); download it "
                           "first (e.g. hf download openai/gpt-oss-20b --local-dir gpt-oss-20b) and pass its folder "
                           "with --base") from None
    rows = model.get_input_embeddings().weight.shape[0]
    vocab = check_vocabulary(tokenizer_size(tokenizer), rows, new_tokens)
    if new_tokens:
        resize_for_new_tokens(model, vocab, new_tokens)  # the adapter holds the trained rows of the new ids
    model = PeftModel.from_pretrained(model, str(release))
    model.eval()
    return model, tokenizer


def servable_from_release(release: str | Path, out_dir: str | Path | None = None, *,
                          public_key: str | Path | None = None, base: str | None = None) -> Path:
    """Verify ``release`` (with ``public_key``, its signature too), merge its adapter into its base model and
    write a servable folder (:func:`langkit.serve.write_servable`) at ``out_dir`` (default
    ``RELEASE-merged``, beside the release). Nothing is loaded from a release that does not verify, and
    nothing is written into the release. Returns the servable folder."""
    from langkit.serve import write_servable

    release = Path(release).resolve()
    report = verify_release(release, public_key)
    if not report.ok:
        raise VerificationError(f"{report.summary()}: not served", report)
    dest = Path(out_dir).resolve() if out_dir is not None else default_servable_dir(release)
    cfg = release_config(release)
    stamp = {"release": str(release), "manifest_sha256": sha256_file(release / MANIFEST_NAME),
             "base_model": base or cfg.train.model}
    if _check_destination(release, dest, stamp):
        log.info("%s was merged from this release already: serving it as it is", dest)
        return dest
    log.info("%s verified%s; merging its adapter into %s", release,
             f" (signed by {report.signer})" if report.signer else " (manifest only: no --public-key given)",
             stamp["base_model"])
    model, tokenizer = load_release_model(release, base)
    write_servable(model.merge_and_unload(), tokenizer, dest)
    write_json(dest / SERVED_FROM_NAME, stamp)  # written last: a folder without it is merged again
    return dest


# --------------------------------------------------------------------------------------------------
# The front door of `langkit serve`
# --------------------------------------------------------------------------------------------------


def servable(target: str | Path, *, public_key: str | Path | None = None, base: str | None = None,
             out_dir: str | Path | None = None) -> tuple[Path, RunConfig]:
    """The servable folder of ``target`` (a release folder, or a run directory) and the config it was made
    with."""
    from langkit.config import load_config
    from langkit.rundir import RunDir
    from langkit.serve import servable_from_run

    target = Path(target)
    if (target / MANIFEST_NAME).is_file():
        return servable_from_release(target, out_dir, public_key=public_key, base=base), release_config(target)
    run_dir = RunDir(target)
    if run_dir.config.is_file() and run_dir.adapter.is_dir():
        if public_key is not None:
            raise ValueError(f"{target} is a run directory: --public-key checks a release (serve {run_dir.release} "
                             "to check its signature)")
        if base is not None:
            raise ValueError(f"{target} is a run directory: it serves the base it was trained on (train.model)")
        return servable_from_run(target, out_dir), load_config(run_dir.config)
    raise FileNotFoundError(f"{target} is neither a langkit release (no {MANIFEST_NAME}) nor a run directory with "
                            "a trained adapter (config.yaml and train/adapter/)")


def serve(target: str | Path, *, host: str = "127.0.0.1", port: int = 8000, backend: str = "auto",
          public_key: str | Path | None = None, base: str | None = None, out_dir: str | Path | None = None,
          device: str = "auto", startup_timeout: float = 600.0,
          extra_args: tuple[str, ...] = ()) -> tuple[ServerHandle, RunConfig]:
    """Make ``target`` servable and start a server on it; returns the running server (stop it, or use it as a
    context manager) and the config of the run or release it serves."""
    import torch

    from langkit.serve import start_server

    folder, cfg = servable(target, public_key=public_key, base=base, out_dir=out_dir)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    handle = start_server(folder, host=host, port=port, backend=backend, device=device,
                          model_name=Path(target).resolve().name, startup_timeout=startup_timeout,
                          extra_args=extra_args)
    return handle, cfg


def first_request(base_url: str, model: str, languages: list[str] | None = None) -> str:
    """What ``langkit serve`` prints once the server answers: where it is, and a first request with curl and
    with the official ``openai`` client (the prompt langkit trains with, from a pivot into a target language)."""
    from langkit.harmony import translation_request
    from langkit.languages import get_language
    from langkit.serve import SYSTEM_IDENTITY

    target = (languages or ["wol_Latn"])[0]
    pivot = get_language(target).default_pivot or "eng_Latn"
    sentence = "Le marché ouvre à huit heures." if pivot == "fra_Latn" else "The market opens at eight."
    messages = [{"role": "system", "content": SYSTEM_IDENTITY},
                {"role": "user", "content": translation_request(pivot, target, sentence)}]
    body = json.dumps({"model": model, "messages": messages, "temperature": 0, "max_tokens": 128},
                      ensure_ascii=False)
    return "\n".join([
        f"Serving {model}",
        f"  base URL: {base_url}",
        f"  model:    {model}",
        "Stop it with Ctrl-C.",
        "",
        "A first request with curl:",
        f"  curl -s {base_url}/chat/completions -H 'Content-Type: application/json' \\",
        f"       -d {shlex.quote(body)}",
        "",
        "or with the openai client (pip install openai):",
        "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{base_url}", api_key="EMPTY")',
        f"  answer = client.chat.completions.create(model={json.dumps(model)}, temperature=0, max_tokens=128,",
        f"                                          messages={json.dumps(messages, ensure_ascii=False)})",
        "  print(answer.choices[0].message.content)",
        "",
        "Score it on a benchmark:",
        f"  langkit eval suite --task flores200-devtest --system served=openai:{base_url}@{model} --out results",
        "",
    ])
