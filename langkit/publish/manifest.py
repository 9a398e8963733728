"""The release's own check: ``manifest.json`` lists the SHA-256 and size of every file, and
:func:`verify_release` recomputes them. Also the names of a release's files and the errors of this stage."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from langkit.utils import get_logger, read_json, sha256_file, write_json

log = get_logger("publish")

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "langkit-manifest/1"
CARD_NAME = "README.md"
CONFIG_NAME = "langkit_config.yaml"
EVAL_REPORT_NAME = "eval_report.json"
EVAL_SUITE_NAME = "eval_suite_results.json"  # a `langkit eval suite` results.json (publish.eval_results)
NEW_TOKENS_NAME = "new_tokens.json"
TOKENIZER_DIR = "tokenizer"
SIGNATURE_NAME = "model.sig"  # written after the manifest, so the manifest cannot list it; it signs the manifest
# Formats that run code when loaded (Python pickles: torch.load, pickle.load, joblib). A release never holds
# them: langkit writes safetensors and JSON only, and refuses such a file wherever it appears, listed or not,
# without opening it.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")

# Files a release may hold that its manifest does not list: the Hub's own .gitattributes (every Hub
# repository has one), the .cache/ folder snapshot_download(local_dir=...) keeps its metadata in, and the
# .git/ folder of a git clone of the release's repository (model signing leaves it out too).
_UNLISTED_FILES = (".gitattributes",)
_UNLISTED_DIRS = (".cache", ".git")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PublishError(RuntimeError):
    """A release cannot be built, pushed or downloaded as asked."""


class ManifestError(PublishError):
    """A folder has no readable langkit manifest."""


class VerificationError(PublishError):
    """A release does not match its manifest; ``report`` says how."""

    def __init__(self, message: str, report: VerifyReport):
        super().__init__(message)
        self.report = report



@dataclass
class VerifyReport:
    """The outcome of checking a release folder against its ``manifest.json``."""

    ok: bool
    missing: list[str] = field(default_factory=list)
    """Listed in the manifest, absent from the folder."""
    mismatched: list[str] = field(default_factory=list)
    """Present, but with another size or SHA-256 than the manifest says."""
    unexpected: list[str] = field(default_factory=list)
    """In the folder, not in the manifest (``.gitattributes`` and ``.cache/`` excepted)."""
    unsafe: list[str] = field(default_factory=list)
    """Refused whatever the manifest says: pickled files (code runs when they are loaded) and links."""
    path: Path = Path(".")
    checked: int = 0
    """Number of files the manifest lists."""
    public_key: Path | None = None
    """The key the signature was checked against (None: not checked)."""
    signer: str = ""
    """Fingerprint of ``public_key`` when ``model.sig`` verified with it."""
    signature_problem: str = ""
    """Why the signature did not verify (unsigned, another key, files changed since signing)."""

    def summary(self) -> str:
        signed = f", and {SIGNATURE_NAME} verifies with {self.public_key} ({self.signer})" if self.signer else ""
        if self.ok:
            return f"OK: {self.checked} files match the manifest of {self.path}{signed}"
        problems = []
        for name, paths in (("missing", self.missing), ("mismatched", self.mismatched),
                            ("unexpected", self.unexpected), ("refused (pickle or link)", self.unsafe)):
            if paths:
                shown = ", ".join(paths[:10]) + (f", ... ({len(paths) - 10} more)" if len(paths) > 10 else "")
                problems.append(f"{len(paths)} {name} ({shown})")
        manifest = (f"does not match its manifest: {'; '.join(problems)}" if problems
                    else f"matches its manifest{signed}")
        signature = f"; signature: {self.signature_problem}" if self.signature_problem else ""
        return f"FAILED: {self.path} {manifest}{signature}"


def _is_unlisted(rel: PurePosixPath) -> bool:
    return rel.as_posix() in _UNLISTED_FILES or rel.parts[0] in _UNLISTED_DIRS


def _release_files(root: Path) -> list[str]:
    """Every file under ``root`` as a relative POSIX path, except the manifest, the signature and the Hub's
    extras."""
    files = []
    for path in root.rglob("*"):
        if path.is_file():
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if rel.as_posix() not in (MANIFEST_NAME, SIGNATURE_NAME) and not _is_unlisted(rel):
                files.append(rel.as_posix())
    return sorted(files)


def is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


def unsafe_files(root: Path) -> list[str]:
    """Pickled files and links under ``root`` (``.cache/`` included: nothing there is ever loaded either,
    but nothing there should be a link), by relative path; they are named, never opened."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or (path.is_file() and is_pickle(path.name)):
            found.append(rel)
    return sorted(found)


def write_manifest(release_dir: Path) -> dict[str, Any]:
    """Write ``manifest.json``: SHA-256 and size of every other file of the release, sorted by path."""
    release_dir = Path(release_dir)
    files = {}
    for rel in _release_files(release_dir):
        path = release_dir / rel
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}
    write_json(release_dir / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(release_dir: Path) -> dict[str, dict[str, Any]]:
    """The ``files`` table of a release's manifest, checked; :class:`ManifestError` if absent or malformed."""
    path = Path(release_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path} not found: {release_dir} is not a langkit release "
                            "(build one with `langkit publish build`)")
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from None

    def bad(why: str) -> ManifestError:
        return ManifestError(f"{path} is malformed: {why}")

    if not isinstance(manifest, dict):
        raise bad("expected a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise bad(f"format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if manifest.get("algorithm") != "sha256":
        raise bad(f"algorithm is {manifest.get('algorithm')!r}, expected 'sha256'")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise bad("'files' must map relative paths to {sha256, size}")
    for rel, entry in files.items():
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel or rel == MANIFEST_NAME:
            raise bad(f"file path {rel!r} must be relative, inside the release, and not the manifest")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256.fullmatch(entry["sha256"])
                or not isinstance(entry.get("size"), int) or isinstance(entry["size"], bool) or entry["size"] < 0):
            raise bad(f"entry of {rel!r} must be {{'sha256': 64 lowercase hex digits, 'size': bytes >= 0}}")
    return files


def verify_release(path: Path, public_key: Path | str | None = None) -> VerifyReport:
    """Recompute every checksum of a release folder and compare with its manifest; with ``public_key`` (a
    PEM file), also check that ``model.sig`` is the signature of that key's holder over these very files.

    Raises :class:`ManifestError` when there is no readable manifest, and
    :class:`~langkit.publish.signing.KeyFileError` when the key file cannot be used; otherwise returns a
    report. ``report.ok`` is False when any file is missing, altered, not listed, pickled or a link, and
    (with a key) when the release is unsigned, signed by another key, or changed since it was signed.
    No file of the release is loaded: they are only hashed.
    """
    root = Path(path)
    if public_key is not None:
        from langkit.publish.signing import fingerprint_of, load_public_key

        key_fingerprint = fingerprint_of(load_public_key(public_key))  # a bad key file: an error before hashing
    if not root.is_dir():
        raise ManifestError(f"{root} is not a folder")
    listed = read_manifest(root)
    report = VerifyReport(ok=False, path=root, checked=len(listed))
    for rel in sorted(listed):
        file = root / rel
        if not file.is_file():
            report.missing.append(rel)
        elif file.stat().st_size != listed[rel]["size"] or sha256_file(file) != listed[rel]["sha256"]:
            report.mismatched.append(rel)
    report.unexpected = [rel for rel in _release_files(root) if rel not in listed]
    report.unsafe = unsafe_files(root)
    if public_key is not None:
        from langkit.publish.signing import check_signature

        report.public_key = Path(public_key)
        report.signature_problem = check_signature(root, public_key)
        report.signer = "" if report.signature_problem else key_fingerprint
    report.ok = not (report.missing or report.mismatched or report.unexpected or report.unsafe
                     or report.signature_problem)
    log.debug(report.summary())
    return report


def keep_if_verified(tmp: Path, out_dir: Path, public_key: Path | str | None, what: str) -> VerifyReport:
    """Verify a release received into ``tmp`` (downloaded, unbundled) and move it to ``out_dir`` only if it
    verifies: into ``out_dir`` itself when that is an existing (empty) folder, else by renaming ``tmp``.
    ``what`` says how it came ("downloaded org/name@main"); a failure raises :class:`VerificationError`
    and moves nothing (the caller removes ``tmp``)."""
    from langkit.utils import replace_dir

    report = verify_release(tmp, public_key)
    report.path = out_dir  # what the summary names: the folder the user asked for
    if not report.ok:
        raise VerificationError(f"{what}, but {report.summary()}; nothing was kept", report)
    if tmp.parent == out_dir:  # an existing empty folder (a mount point, "."): filled in place
        for entry in sorted(tmp.iterdir()):
            os.replace(entry, out_dir / entry.name)
        tmp.rmdir()
    else:
        replace_dir(tmp, out_dir)
    return report
