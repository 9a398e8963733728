"""Signed releases: who published a release, not only whether its files match their manifest.

The manifest travels with the files, so whoever can change the files can rewrite it. A signature made with
the publisher's private key cannot be remade without that key. langkit signs with OpenSSF model signing
(the ``model-signing`` package): ``model.sig`` is a Sigstore bundle over the SHA-256 of every file of the
release (the manifest included), made with an elliptic-curve key, entirely offline. It verifies with that
package's own command as well, so nobody has to trust langkit to check langkit::

    model_signing verify key RELEASE --signature RELEASE/model.sig --public_key publisher.pub.pem

A key is named by its fingerprint: the SHA-256 of the public key in PEM (SubjectPublicKeyInfo) form, the
same digest model-signing stores in ``model.sig`` as the key's hint, and what ``sha256sum`` prints for a
public key file written by :func:`generate_key_pair`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from langkit.publish.manifest import SIGNATURE_NAME, PublishError
from langkit.utils import get_logger, sha256_file

log = get_logger("publish")

PASSPHRASE_ENV = "LANGKIT_SIGN_PASSPHRASE"
"""Environment variable holding the passphrase of an encrypted private key (never a command-line argument,
which other users of the machine can read)."""
THROWAWAY = "throwaway"
"""``publish.sign_key`` value that makes a new key pair for one run (demos, tests): proves nothing about who."""
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts (NIST P-256/384/521)
# Paths model-signing leaves out of the signature besides its own git defaults: the signature itself and
# the metadata folder snapshot_download(local_dir=...) writes. The list is recorded inside model.sig.
_UNSIGNED_PATHS = (SIGNATURE_NAME, ".cache")
_KEYGEN_HINT = "make a key pair with `langkit publish keygen KEY.pem`"


class KeyFileError(PublishError):
    """A key file is missing, unreadable, of an unsupported type, or its passphrase is wrong."""


class SignatureError(PublishError):
    """A signature cannot be made or read."""


@dataclass
class KeyPair:
    """Where :func:`generate_key_pair` wrote a key pair, and the public key's fingerprint."""

    private_key: Path
    public_key: Path
    fingerprint: str


def _public_pem(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def fingerprint_of(public_key: Any) -> str:
    """``sha256:`` and 64 hex digits: the key's name on cards, in messages, and in model.sig's hint."""
    return "sha256:" + hashlib.sha256(_public_pem(public_key)).hexdigest()


def _check_curve(key: Any, path: Path, kind: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if kind == "private" else key
    if not isinstance(public, ec.EllipticCurvePublicKey):
        name = type(public).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"
        raise KeyFileError(f"{path} is a {name} {kind} key; model signing takes elliptic-curve keys only "
                           f"(NIST P-256, P-384 or P-521): {_KEYGEN_HINT}")
    if public.curve.name not in SUPPORTED_CURVES:
        raise KeyFileError(f"{path} is an elliptic-curve key on {public.curve.name}; model signing takes NIST "
                           f"P-256, P-384 or P-521 only: {_KEYGEN_HINT}")


def _read_key_file(path: Path, kind: str) -> bytes:
    if not path.exists():
        raise KeyFileError(f"{kind} key file {path} not found" + (f": {_KEYGEN_HINT}" if kind == "private" else
                           ": ask the publisher for their public key (a PEM file)"))
    if not path.is_file():
        raise KeyFileError(f"{kind} key {path} is not a file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise KeyFileError(f"cannot read {kind} key file {path}: {err.strerror or err} (check its permissions)") from None


def load_private_key(path: str | Path, passphrase: str | bytes | None = None) -> Any:
    """The elliptic-curve private key in a PEM file, checked; :class:`KeyFileError` says what is wrong and
    what to do. ``passphrase`` defaults to ``$LANGKIT_SIGN_PASSPHRASE`` for an encrypted key."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, "private")
    secret = _passphrase(passphrase)
    encrypted = _is_encrypted(data)
    if encrypted and not secret:
        raise KeyFileError(f"{path} is encrypted: set {PASSPHRASE_ENV} to its passphrase")
    try:
        key = serialization.load_pem_private_key(data, secret if encrypted else None)
    except ValueError as err:
        if "password" in str(err).lower() or "decrypt" in str(err).lower():
            raise KeyFileError(f"wrong passphrase for {path} (from {PASSPHRASE_ENV})") from None
        if b"PUBLIC KEY" in data:
            raise KeyFileError(f"{path} holds a public key; signing needs the private key (the public one is "
                               "for verifying)") from None
        raise KeyFileError(f"{path} is not a PEM private key ({str(err).split('.')[0]}): {_KEYGEN_HINT}") from None
    except TypeError as err:  # the file's own idea of whether it is encrypted differs from ours
        raise KeyFileError(f"cannot open {path}: {err} (set or unset {PASSPHRASE_ENV})") from None
    except Exception as err:  # e.g. cryptography's UnsupportedAlgorithm for an unknown key type
        raise KeyFileError(f"{path}: unsupported private key ({err}): {_KEYGEN_HINT}") from None
    _check_curve(key, path, "private")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users of this machine: `chmod 600 %s`", path, path)
    return key


def load_public_key(path: str | Path) -> Any:
    """The elliptic-curve public key in a PEM file, checked (:class:`KeyFileError` otherwise)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        hint = (" (it is a private key: verify with the public one, which is all anyone else should hold)"
                if b"PRIVATE KEY" in data else "")
        raise KeyFileError(f"{path} is not a PEM public key ({str(err).split('.')[0]}){hint}") from None
    except Exception as err:
        raise KeyFileError(f"{path}: unsupported public key ({err})") from None
    _check_curve(key, path, "public")
    return key


def _is_encrypted(pem: bytes) -> bool:
    # PKCS#8 says so in its first line; the older OpenSSL form in a Proc-Type header just below it
    return b"ENCRYPTED" in pem[:200]


def is_encrypted_key_file(path: str | Path) -> bool:
    """Whether a PEM private key file is encrypted (needs a passphrase); False when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return _is_encrypted(f.read(200))
    except OSError:
        return False


def _passphrase(given: str | bytes | None) -> bytes | None:
    value = given if given is not None else os.environ.get(PASSPHRASE_ENV) or None
    return value.encode("utf-8") if isinstance(value, str) else value


def public_key_path_for(private_key: str | Path) -> Path:
    """Where :func:`generate_key_pair` puts the public key of ``KEY.pem`` by default: ``KEY.pub.pem``."""
    path = Path(private_key)
    return path.with_name((path.name[:-4] if path.name.endswith(".pem") else path.name) + ".pub.pem")


def generate_key_pair(private_key: str | Path, public_key: str | Path | None = None,
                      passphrase: str | bytes | None = None) -> KeyPair:
    """A new EC P-256 key pair: the private key as PKCS#8 PEM, readable by its owner only (mode 0600;
    encrypted when a passphrase is given or ``$LANGKIT_SIGN_PASSPHRASE`` is set), and the public key as
    PEM (``KEY.pub.pem`` by default), the file to hand to whoever verifies. Existing files are never
    overwritten: a lost signing key cannot be recovered."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_path = Path(private_key)
    public_path = Path(public_key) if public_key else public_key_path_for(private_path)
    if private_path.resolve() == public_path.resolve():
        raise KeyFileError(f"the private and public key would both be {private_path}: give two file names")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path} exists: it is left as it is (a key is never overwritten); choose another name")
    secret = _passphrase(passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    # created with mode 0600 from the first byte (O_EXCL: never through an existing file or link)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
            f.flush()
            os.fsync(f.fileno())
        with open(public_path, "xb") as f:
            f.write(_public_pem(key.public_key()))
    except BaseException:
        for path in (private_path, public_path):
            path.unlink(missing_ok=True)
        raise
    pair = KeyPair(private_path, public_path, fingerprint_of(key.public_key()))
    log.info("made key pair %s (private, mode 0600%s) and %s (public), fingerprint %s", private_path,
             ", encrypted" if secret else "", public_path, pair.fingerprint)
    return pair


def _model_signing() -> Any:
    try:
        import model_signing
    except ImportError as err:  # model-signing 1.1 imports pyOpenSSL without declaring it
        raise SignatureError(f"signatures need the model-signing package, which cannot be imported ({err}): "
                             "pip install 'model-signing>=1.1,<1.2' pyopenssl") from None
    return model_signing


def _hashing_config() -> Any:
    return _model_signing().hashing.Config().set_ignored_paths(paths=list(_UNSIGNED_PATHS))


def sign_release(release_dir: str | Path, private_key: str | Path, passphrase: str | bytes | None = None) -> str:
    """Write ``model.sig`` into ``release_dir``: a Sigstore bundle over every file of the folder (all but
    model.sig itself, ``.cache/`` and git's files), signed with ``private_key``. Returns the public key's
    fingerprint. The signature is written beside the folder and renamed in, so a failed signing leaves no
    partial ``model.sig``."""
    model_signing = _model_signing()
    release = Path(release_dir)
    key_path = Path(private_key)
    key = load_private_key(key_path, passphrase)  # clear errors before model-signing reads the file again
    password = _passphrase(passphrase) if _is_encrypted(key_path.read_bytes()) else None
    tmp = release.parent / f".tmp-{release.name}-{SIGNATURE_NAME}"
    try:
        (model_signing.signing.Config()
         # model-signing passes the password on to cryptography, which takes bytes (its annotation says str)
         .use_elliptic_key_signer(private_key=key_path, password=password)  # type: ignore[arg-type]
         .set_hashing_config(_hashing_config())
         .sign(release, tmp))
        os.replace(tmp, release / SIGNATURE_NAME)
    except PublishError:
        raise
    except Exception as err:
        raise SignatureError(f"signing {release} with {key_path} failed: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    fingerprint = fingerprint_of(key.public_key())
    log.info("signed %s with key %s (%s)", release, key_path, fingerprint)
    return fingerprint


def signature_key_hint(release_dir: str | Path) -> str | None:
    """The fingerprint of the key that made ``model.sig`` as the bundle states it (unchecked), or None."""
    try:
        bundle = json.loads((Path(release_dir) / SIGNATURE_NAME).read_text(encoding="utf-8"))
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"sha256:{hint}" if isinstance(hint, str) and re.fullmatch(r"[0-9a-f]{64}", hint) else None


def _describe_mismatch(release: Path, message: str) -> str:
    """Which files differ from what model.sig signed, by name. Called once model-signing has checked the
    signature itself (it compares the files only after that), so the signed list read here is authentic."""
    try:
        statement = _signed_statement(release)
        serialization = statement["predicate"]["serialization"]
        if serialization.get("hash_type") != "sha256" or serialization.get("method") != "files":
            return message
        signed = {str(r["name"]): str(r["digest"]) for r in statement["predicate"]["resources"]}
        ignored = [PurePosixPath(p) for p in serialization.get("ignore_paths", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return message
    present = {}
    for path in sorted(release.rglob("*")):
        rel = PurePosixPath(path.relative_to(release).as_posix())
        if path.is_file() and not any(rel.is_relative_to(i) for i in ignored):
            present[rel.as_posix()] = sha256_file(path)
    changed = [n for n in sorted(signed) if n in present and present[n] != signed[n]]
    added = [n for n in present if n not in signed]
    removed = [n for n in sorted(signed) if n not in present]
    parts = [f"{what} since signing: {', '.join(names)}" for what, names in
             (("changed", changed), ("added", added), ("removed", removed)) if names]
    return "; ".join(parts) if parts else message


def check_signature(release_dir: str | Path, public_key: str | Path) -> str:
    """Check ``model.sig`` of a release against ``public_key``; returns "" when it verifies, else what is
    wrong (unsigned, signed by another key, files changed, added or removed since signing). Key files that
    cannot be used raise :class:`KeyFileError`."""
    model_signing = _model_signing()
    release = Path(release_dir)
    key_path = Path(public_key)
    key = load_public_key(key_path)
    expected = fingerprint_of(key)
    signature = release / SIGNATURE_NAME
    if not signature.is_file():
        return (f"unsigned: there is no {SIGNATURE_NAME}, so nothing shows that the holder of {key_path} "
                "published it (ask the publisher for a signed release)")
    hint = signature_key_hint(release)
    if hint is not None and hint != expected:
        return (f"{SIGNATURE_NAME} was made with another key ({hint}) than {key_path} ({expected}): "
                "this release was not signed by the holder of that key")
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key_path).set_hashing_config(
            _hashing_config()).verify(release, signature)
    except Exception as err:  # model-signing raises ValueError, and JSON or protobuf errors on a broken file
        text = str(err)
        if "Signature mismatch" in text:
            return f"{SIGNATURE_NAME} does not match the files: {_describe_mismatch(release, text)}"
        if "Key mismatch" in text or type(err).__name__ == "InvalidSignature":
            return f"{SIGNATURE_NAME} was not made with the private key of {key_path} ({expected})"
        if "symlink" in text.lower():
            return f"the release holds a symbolic link, which a signed release never does ({text})"
        return f"{SIGNATURE_NAME} cannot be read as a model signature ({type(err).__name__}: {text[:200]})"
    return ""


def _signed_statement(release_dir: str | Path) -> dict[str, Any]:
    bundle = json.loads((Path(release_dir) / SIGNATURE_NAME).read_text(encoding="utf-8"))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    if not isinstance(statement, dict):
        raise ValueError("the signed statement is not a JSON object")
    return statement


def decode_signed_files(release_dir: str | Path) -> list[str]:
    """The file names ``model.sig`` lists (unchecked: for messages and tests, never for trust)."""
    return sorted(str(r["name"]) for r in _signed_statement(release_dir)["predicate"]["resources"])
