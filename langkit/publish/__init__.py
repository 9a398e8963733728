"""Stage 5, publish: a self-checking release folder, and a way to push it to the Hub and get it back.

The release is built from what the earlier stages left in the run directory::

    release/
      adapter_model.safetensors, adapter_config.json, ...   the PEFT adapter (train/adapter/)
      tokenizer/                                           the extended tokenizer (tokenizer/tokenizer/)
      new_tokens.json                                      the added tokens, with their ids
      eval_report.json                                     scores with their signatures (when evaluated)
      langkit_config.yaml                                  the resolved config of the run
      README.md                                            the model card (Hub metadata + text)
      manifest.json                                        SHA-256 and size of every file above
      model.sig                                            the publisher's signature over all of them
                                                           (OpenSSF model signing; when publish.sign_key is set)

``manifest.json`` is what makes a release checkable anywhere: :func:`verify_release` recomputes every
checksum, and both :func:`push_release` (before uploading) and :func:`download_release` (after
downloading) refuse a folder that does not match its manifest. Pushing goes through the real
``huggingface_hub`` client, so ``HF_ENDPOINT`` and ``HF_TOKEN`` apply as usual. The manifest travels with
the files, so it cannot say who published them: ``model.sig`` can, and every check that takes the publisher's
public key (verify, download, unbundle) refuses a release that is unsigned, signed by another key, or
changed since it was signed.

The parts, one module each: :mod:`~langkit.publish.manifest` (file names, the manifest, verification,
errors), :mod:`~langkit.publish.card` (the model card), :mod:`~langkit.publish.build` (the release
folder), :mod:`~langkit.publish.signing` (keys, model.sig), :mod:`~langkit.publish.hub` (push and
download), :mod:`~langkit.publish.bundle` (one tar file for offline transport), :mod:`~langkit.publish.serve`
(``langkit serve``: a verified release merged beside itself and served; what serving gpt-oss costs). :func:`run`
is the stage's one front door.
"""

from __future__ import annotations

from pathlib import Path

from langkit.config import RunConfig
from langkit.publish.build import build_release
from langkit.publish.bundle import BundleError, bundle_release, unbundle_release
from langkit.publish.card import _energy_line, build_model_card, release_languages
from langkit.publish.hub import download_release, push_release
from langkit.publish.manifest import (
    CARD_NAME,
    CONFIG_NAME,
    EVAL_REPORT_NAME,
    MANIFEST_NAME,
    NEW_TOKENS_NAME,
    SIGNATURE_NAME,
    TOKENIZER_DIR,
    ManifestError,
    PublishError,
    VerificationError,
    VerifyReport,
    read_manifest,
    verify_release,
    write_manifest,
)
from langkit.publish.serve import servable_from_release, weight_memory
from langkit.publish.signing import (
    PASSPHRASE_ENV,
    THROWAWAY,
    KeyFileError,
    KeyPair,
    SignatureError,
    check_signature,
    fingerprint_of,
    generate_key_pair,
    is_encrypted_key_file,
    load_private_key,
    load_public_key,
    sign_release,
)
from langkit.rundir import RunDir

__all__ = [
    "CARD_NAME", "CONFIG_NAME", "EVAL_REPORT_NAME", "MANIFEST_NAME", "NEW_TOKENS_NAME", "SIGNATURE_NAME",
    "TOKENIZER_DIR", "PASSPHRASE_ENV", "THROWAWAY",
    "BundleError", "KeyFileError", "ManifestError", "PublishError", "SignatureError", "VerificationError",
    "KeyPair", "VerifyReport",
    "build_model_card", "build_release", "bundle_release", "check_signature", "download_release",
    "fingerprint_of", "generate_key_pair", "is_encrypted_key_file", "load_private_key", "load_public_key",
    "push_release", "read_manifest", "release_languages", "run", "servable_from_release", "sign_release",
    "unbundle_release", "verify_release", "weight_memory", "write_manifest", "_energy_line",
]  # fmt: skip


def run(cfg: RunConfig, run_dir: RunDir) -> Path:
    """Stage 5: build ``run_dir.release``; push it when ``publish.repo_id`` is set. Returns the release."""
    release = build_release(run_dir, cfg)
    if cfg.publish.repo_id:
        push_release(
            release,
            cfg.publish.repo_id,
            private=cfg.publish.private,
            tag=cfg.publish.tag,
            commit_message=f"langkit release of run {cfg.name}" + (f" ({cfg.publish.tag})" if cfg.publish.tag else ""),
        )
    return release
