"""Signed releases: key pairs, model.sig, and every way a release that someone else altered is refused.

The signature must also verify with model-signing's own command line, so an agency need not trust langkit
to check langkit; each refusal is checked against that command too where it applies."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants

from langkit.cli import main
from langkit.config import load_config
from langkit.publish import (
    SIGNATURE_NAME,
    KeyFileError,
    PublishError,
    VerificationError,
    build_release,
    download_release,
    generate_key_pair,
    push_release,
    sign_release,
    verify_release,
    write_manifest,
)
from langkit.publish.signing import decode_signed_files
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401  (registers the hub_server fixture)
from tests.test_publish import REPO, card_metadata, make_run


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("LANGKIT_SIGN_PASSPHRASE", raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The publisher's key pair and a stranger's (an attacker with a key of their own)."""
    folder = tmp_path_factory.mktemp("keys")
    publisher = generate_key_pair(folder / "publisher.pem", passphrase=b"")
    stranger = generate_key_pair(folder / "stranger.pem", passphrase=b"")
    return {"private": publisher.private_key, "public": publisher.public_key,
            "stranger_private": stranger.private_key, "stranger_public": stranger.public_key}


def signed_release(tmp_path: Path, keys: dict[str, Path], name: str = "run") -> Path:
    run_dir, cfg = make_run(tmp_path / name)
    cfg.publish.sign_key = str(keys["private"])
    return build_release(run_dir, cfg)


def model_signing_cli(release: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    """model-signing's own verifier, in a process of its own: what an agency runs without langkit."""
    return subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(release),
         "--signature", str(release / SIGNATURE_NAME), "--public_key", str(public_key)],
        capture_output=True, text=True, timeout=120, check=False)


def refused(release: Path, public_key: Path, *names: str) -> str:
    """Assert that langkit (and model-signing's CLI) refuse the release; the problem text names ``names``."""
    report = verify_release(release, public_key)
    assert not report.ok and not report.signer
    text = report.summary()
    assert text.startswith("FAILED") and all(name in text for name in names), text
    assert model_signing_cli(release, public_key).returncode != 0
    return text


# --------------------------------------------------------------------------------------------------
# Key pairs
# --------------------------------------------------------------------------------------------------


def test_keygen_makes_an_owner_only_p256_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization

    assert main(["-q", "publish", "keygen", str(tmp_path / "agency.pem")]) == 0
    out = capsys.readouterr().out
    private, public = tmp_path / "agency.pem", tmp_path / "agency.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert key.curve.name == "secp256r1"  # type: ignore[union-attr]
    pub = serialization.load_pem_public_key(public.read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    # the fingerprint is what sha256sum prints for the public key file
    fingerprint = "sha256:" + hashlib.sha256(public.read_bytes()).hexdigest()
    assert fingerprint in out and str(public) in out

    # a key is never overwritten, and nothing else is written either
    before = private.read_bytes()
    assert main(["-q", "publish", "keygen", str(private), "--public", str(tmp_path / "other.pub.pem")]) == 1
    assert "exists" in capsys.readouterr().err
    assert private.read_bytes() == before and not (tmp_path / "other.pub.pem").exists()


def test_encrypted_key_needs_its_passphrase(tmp_path: Path, keys: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LANGKIT_SIGN_PASSPHRASE", "correct horse")
    assert main(["-q", "publish", "keygen", str(tmp_path / "enc.pem"), "--encrypt"]) == 0
    assert b"ENCRYPTED" in (tmp_path / "enc.pem").read_bytes()

    run_dir, cfg = make_run(tmp_path / "run")
    cfg.publish.sign_key = str(tmp_path / "enc.pem")
    release = build_release(run_dir, cfg)  # the passphrase from the environment
    assert verify_release(release, tmp_path / "enc.pub.pem").ok

    monkeypatch.setenv("LANGKIT_SIGN_PASSPHRASE", "wrong")
    with pytest.raises(KeyFileError, match=r"wrong passphrase for .*enc\.pem.*LANGKIT_SIGN_PASSPHRASE"):
        build_release(run_dir, cfg)
    monkeypatch.delenv("LANGKIT_SIGN_PASSPHRASE")
    with pytest.raises(KeyFileError, match=r"enc\.pem is encrypted: set LANGKIT_SIGN_PASSPHRASE"):
        build_release(run_dir, cfg)
    assert verify_release(release, tmp_path / "enc.pub.pem").ok  # the refused rebuilds left it as it was
    # --encrypt without any passphrase (no terminal here to ask on) writes nothing
    assert main(["-q", "publish", "keygen", str(tmp_path / "enc2.pem"), "--encrypt"]) == 1
    assert "needs a passphrase" in capsys.readouterr().err and not (tmp_path / "enc2.pem").exists()


def test_unusable_keys_are_named_with_what_to_do(tmp_path: Path, keys: dict[str, Path]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    def write(name: str, key: object) -> Path:
        path = tmp_path / name
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                           serialization.NoEncryption()))
        return path

    run_dir, cfg = make_run(tmp_path / "run")
    cases = {
        tmp_path / "absent.pem": r"private key file .*absent\.pem not found: make a key pair with `langkit publish keygen",
        tmp_path: r"is not a file",
        write("rsa.pem", rsa.generate_private_key(65537, 2048)): r"rsa\.pem is a RSA private key; .*elliptic-curve",
        write("ed.pem", ed25519.Ed25519PrivateKey.generate()): r"ed\.pem is a Ed25519 private key",
        write("k1.pem", ec.generate_private_key(ec.SECP256K1())): r"k1\.pem .*secp256k1.*P-256",
        keys["public"]: r"holds a public key; signing needs the private key",
    }
    (tmp_path / "garbage.pem").write_text("not a key\n")
    cases[tmp_path / "garbage.pem"] = r"garbage\.pem is not a PEM private key"
    for path, message in cases.items():
        cfg.publish.sign_key = str(path)
        with pytest.raises(KeyFileError, match=message):
            build_release(run_dir, cfg)
    assert not run_dir.release.exists() and not [p for p in run_dir.root.iterdir() if p.name.startswith(".tmp")]

    # the same for the public key of a check, said before anything is hashed or downloaded
    cfg.publish.sign_key = ""
    release = build_release(run_dir, cfg)
    for path, message in ((tmp_path / "absent.pub.pem", r"public key file .*absent\.pub\.pem not found: ask the publisher"),
                          (keys["private"], r"not a PEM public key .*it is a private key"),
                          (tmp_path / "garbage.pem", r"garbage\.pem is not a PEM public key")):
        with pytest.raises(KeyFileError, match=message):
            verify_release(release, path)
        with pytest.raises(KeyFileError, match=message):
            download_release(REPO, tmp_path / "down", public_key=path)
        assert main(["-q", "publish", "verify", str(release), "--public-key", str(path)]) == 1
    assert not (tmp_path / "down").exists()


def test_unreadable_key_file(tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "locked.pem"
    key.write_bytes(keys["private"].read_bytes())
    key.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make this one fail as it would for anyone else
        real = Path.read_bytes

        def locked(self: Path) -> bytes:
            if self == key:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", locked)
    run_dir, cfg = make_run(tmp_path / "run")
    cfg.publish.sign_key = str(key)
    with pytest.raises(KeyFileError, match=r"cannot read private key file .*locked\.pem.*permissions"):
        build_release(run_dir, cfg)


# --------------------------------------------------------------------------------------------------
# A signed release
# --------------------------------------------------------------------------------------------------


def test_signed_release_verifies_with_langkit_and_with_model_signing(tmp_path: Path, keys: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    release = signed_release(tmp_path, keys)
    manifest = json.loads((release / "manifest.json").read_text())
    # model.sig covers every file of the release, the manifest and the card included
    assert decode_signed_files(release) == sorted([*manifest["files"], "manifest.json"])
    assert SIGNATURE_NAME not in manifest["files"]

    report = verify_release(release, keys["public"])
    fingerprint = "sha256:" + hashlib.sha256(keys["public"].read_bytes()).hexdigest()
    assert report.ok and report.signer == fingerprint
    assert fingerprint in report.summary() and "model.sig verifies" in report.summary()
    assert verify_release(release).ok  # without a key: the manifest alone, as before

    result = model_signing_cli(release, keys["public"])
    assert result.returncode == 0 and "Verification succeeded" in result.stdout, result.stderr

    # the card names the key's fingerprint and shows both ways to check
    meta, body = card_metadata(release)
    assert f"`{fingerprint}`" in body
    assert "langkit publish verify demo --public-key publisher.pub.pem" in body
    assert "langkit publish download <org>/<name> --out demo --public-key publisher.pub.pem" in body
    assert "model_signing verify key demo --signature demo/model.sig --public_key publisher.pub.pem" in body
    assert "not signed" not in body and "Throwaway" not in body

    assert main(["-q", "publish", "verify", str(release), "--public-key", str(keys["public"])]) == 0
    assert fingerprint in capsys.readouterr().out


def test_unsigned_release_is_refused_when_a_key_is_given(tmp_path: Path, keys: dict[str, Path]) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    assert verify_release(release).ok
    assert "**not signed**" in card_metadata(release)[1]
    report = verify_release(release, keys["public"])
    assert not report.ok and report.signature_problem.startswith("unsigned")
    assert main(["-q", "publish", "verify", str(release), "--public-key", str(keys["public"])]) == 1


def test_file_changed_and_manifest_rewritten(tmp_path: Path, keys: dict[str, Path]) -> None:
    # Whoever can change the files can rewrite the manifest: only the signature catches it.
    release = signed_release(tmp_path, keys)
    config = release / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 8', '"r": 64'))
    write_manifest(release)
    assert verify_release(release).ok  # the manifest alone is fooled
    text = refused(release, keys["public"], "adapter_config.json", "manifest.json", "changed since signing")
    assert "unsigned" not in text


def test_signed_before_the_last_file_changed(tmp_path: Path, keys: dict[str, Path]) -> None:
    # The publisher signs, then edits the card and refreshes the manifest, and forgets to sign again.
    release = signed_release(tmp_path, keys)
    card = release / "README.md"
    card.write_text(card.read_text() + "\nOne more note.\n")
    write_manifest(release)
    refused(release, keys["public"], "README.md", "changed since signing")
    # signing again fixes it
    sign_release(release, keys["private"])
    assert verify_release(release, keys["public"]).ok


def test_file_added_above_all_a_pickle_is_refused_and_never_loaded(tmp_path: Path, keys: dict[str, Path]) -> None:
    release = signed_release(tmp_path, keys)
    marker = tmp_path / "pickle-was-loaded"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))  # loading this file would create the marker

    for name in ("adapter_model.bin", "tokenizer/optimizer.pt", "extra.pkl"):
        (release / name).write_bytes(pickle.dumps(Payload()))
        text = refused(release, keys["public"], name, "added since signing")
        assert "refused (pickle or link)" in text
        (release / name).unlink()
    # listed in a rewritten manifest, a pickle is still refused, with or without a key
    (release / "adapter_model.bin").write_bytes(pickle.dumps(Payload()))
    write_manifest(release)
    report = verify_release(release)
    assert not report.ok and report.unsafe == ["adapter_model.bin"] and not report.unexpected
    refused(release, keys["public"], "adapter_model.bin")
    assert not marker.exists()  # hashed, never unpickled
    # a plain added file too
    (release / "adapter_model.bin").unlink()
    write_manifest(release)
    (release / "notes.txt").write_text("added")
    refused(release, keys["public"], "notes.txt", "added since signing")


def test_signature_made_with_another_key(tmp_path: Path, keys: dict[str, Path]) -> None:
    release = signed_release(tmp_path, keys)
    # checked with someone else's public key
    assert "another key" in refused(release, keys["stranger_public"])
    # an attacker alters a file, rewrites the manifest and signs with their own key
    (release / "new_tokens.json").write_text("[]")
    write_manifest(release)
    sign_release(release, keys["stranger_private"])
    assert verify_release(release, keys["stranger_public"]).ok  # a valid signature, by the wrong holder
    text = refused(release, keys["public"], "another key")
    assert str(keys["public"]) in text


def test_a_signature_that_is_not_one(tmp_path: Path, keys: dict[str, Path]) -> None:
    release = signed_release(tmp_path, keys)
    (release / SIGNATURE_NAME).write_text("{not json")
    assert "cannot be read as a model signature" in refused(release, keys["public"])
    # a bundle without the key hint, whose signature bytes are someone else's
    stranger = signed_release(tmp_path, keys | {"private": keys["stranger_private"]}, name="run2")
    bundle = json.loads((stranger / SIGNATURE_NAME).read_text())
    bundle["verificationMaterial"]["publicKey"]["hint"] = ""
    (release / SIGNATURE_NAME).write_text(json.dumps(bundle))
    assert verify_release(release, keys["public"]).signature_problem


def test_symbolic_link_in_a_release_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    release = signed_release(tmp_path, keys)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for publishing")
    (release / "notes.txt").symlink_to(secret)
    report = verify_release(release)
    assert not report.ok and report.unsafe == ["notes.txt"]


def test_throwaway_key_for_demos(tmp_path: Path) -> None:
    run_dir, cfg = make_run(tmp_path / "run")
    cfg.publish.sign_key = "throwaway"
    release = build_release(run_dir, cfg)
    private, public = run_dir.root / "signing/throwaway.pem", run_dir.root / "signing/throwaway.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert verify_release(release, public).ok
    _, body = card_metadata(release)
    assert "**Throwaway key.**" in body
    assert yaml.safe_load((release / "langkit_config.yaml").read_text())["publish"]["sign_key"] == "throwaway"
    # a rebuild signs with the same throwaway key
    assert verify_release(build_release(run_dir, cfg), public).ok


def test_sign_key_in_config_and_on_the_command_line(tmp_path: Path, keys: dict[str, Path]) -> None:
    config = tmp_path / "cfg" / "run.yaml"
    config.parent.mkdir()
    (tmp_path / "cfg" / "keys").mkdir()
    (tmp_path / "cfg" / "keys" / "k.pem").write_bytes(keys["private"].read_bytes())
    config.write_text(yaml.safe_dump({"name": "demo", "languages": ["wol_Latn", "swh_Latn"],
                                      "train": {"max_steps": 2},  # as make_run's stages recorded it
                                      "publish": {"sign_key": "keys/k.pem"}}))
    assert load_config(config).publish.sign_key == str((tmp_path / "cfg/keys/k.pem").resolve())

    run_dir, _ = make_run(tmp_path / "run")
    assert main(["-q", "publish", "build", str(config), "--out", str(run_dir.root)]) == 0
    assert verify_release(run_dir.release, keys["public"]).ok
    # the published config names the key file, not where it lies
    released = yaml.safe_load((run_dir.release / "langkit_config.yaml").read_text())
    assert released["publish"]["sign_key"] == "k.pem"
    # --sign-key wins over the config
    assert main(["-q", "publish", "build", str(config), "--out", str(run_dir.root),
                 "--sign-key", str(keys["stranger_private"])]) == 0
    assert verify_release(run_dir.release, keys["stranger_public"]).ok


# --------------------------------------------------------------------------------------------------
# Download with the publisher's key
# --------------------------------------------------------------------------------------------------


def test_download_checks_the_signature(tmp_path: Path, keys: dict[str, Path], hub_server: HubServer) -> None:
    release = signed_release(tmp_path, keys)
    push_release(release, REPO, endpoint=hub_server.endpoint, token=hub_server.token)
    down = tmp_path / "down"
    report = download_release(REPO, down, endpoint=hub_server.endpoint, token=hub_server.token,
                              public_key=keys["public"])
    assert report.ok and report.signer and (down / SIGNATURE_NAME).is_file()
    # the folder as downloaded (with the Hub's .gitattributes and huggingface_hub's .cache/) verifies with
    # model-signing's own command too
    assert (down / ".gitattributes").exists() and (down / ".cache").is_dir()
    assert model_signing_cli(down, keys["public"]).returncode == 0

    # someone with write access to the mirror changes a file and rewrites the manifest to match
    repo = hub_server.repos[("model", REPO)]
    head = repo.commits[repo.branches["main"]]
    head.files["adapter_config.json"] = b'{"peft_type": "LORA", "r": 64}'
    (release / "adapter_config.json").write_bytes(head.files["adapter_config.json"])
    head.files["manifest.json"] = json.dumps(write_manifest(release), indent=2).encode() + b"\n"
    assert download_release(REPO, tmp_path / "fooled", endpoint=hub_server.endpoint, token=hub_server.token).ok
    with pytest.raises(VerificationError, match=r"adapter_config\.json.*nothing was kept"):
        download_release(REPO, tmp_path / "down2", endpoint=hub_server.endpoint, token=hub_server.token,
                         public_key=keys["public"])
    assert not (tmp_path / "down2").exists()

    # an unsigned release, downloaded with a key: refused, nothing kept
    del head.files[SIGNATURE_NAME]
    with pytest.raises(VerificationError, match="unsigned"):
        download_release(REPO, tmp_path / "down3", endpoint=hub_server.endpoint, token=hub_server.token,
                         public_key=keys["public"])
    assert not (tmp_path / "down3").exists()


def test_truncated_download_is_refused(tmp_path: Path, keys: dict[str, Path], hub_server: HubServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import hub_server as hub_module

    release = signed_release(tmp_path, keys)
    push_release(release, REPO, endpoint=hub_server.endpoint, token=hub_server.token)
    weights = (release / "adapter_model.safetensors").read_bytes()

    # 1. the mirror stores a file cut short (a copy that stopped half way), and serves it consistently
    repo = hub_server.repos[("model", REPO)]
    head = repo.commits[repo.branches["main"]]
    head.files["adapter_model.safetensors"] = weights[: len(weights) // 2]
    with pytest.raises(VerificationError, match=r"adapter_model\.safetensors") as info:
        download_release(REPO, tmp_path / "down", endpoint=hub_server.endpoint, token=hub_server.token,
                         public_key=keys["public"])
    assert info.value.report.mismatched == ["adapter_model.safetensors"]
    assert not (tmp_path / "down").exists()
    head.files["adapter_model.safetensors"] = weights

    # 2. the connection drops in the middle of the file, every time (the server promises more than it sends)
    real_send = hub_module._Handler._send

    def cut_short(self, status, body=b"", headers=None, content_type="application/json", head=False):  # type: ignore[no-untyped-def]
        if content_type == "application/octet-stream" and body == weights and not head:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        real_send(self, status, body, headers, content_type, head)

    monkeypatch.setattr(hub_module._Handler, "_send", cut_short)
    with pytest.raises(PublishError, match=r"cannot download .*127\.0\.0\.1.*Nothing was kept"):
        download_release(REPO, tmp_path / "down", endpoint=hub_server.endpoint, token=hub_server.token,
                         public_key=keys["public"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_unreachable_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(PublishError, match=rf"cannot download {REPO}@main: the download from {endpoint} failed.*HF_ENDPOINT"):
        download_release(REPO, tmp_path / "down", endpoint=endpoint)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    assert main(["-q", "publish", "download", REPO, "--out", str(tmp_path / "down")]) == 1
    assert endpoint in capsys.readouterr().err and list(tmp_path.iterdir()) == []
