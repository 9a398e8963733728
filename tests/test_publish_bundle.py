"""Offline bundles: one tar file to carry a release, unpacked only if it verifies; unsafe archives refused
before anything is written."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import pytest
from huggingface_hub import constants

from langkit.cli import main
from langkit.publish import (
    SIGNATURE_NAME,
    BundleError,
    KeyFileError,
    VerificationError,
    build_release,
    bundle_release,
    generate_key_pair,
    unbundle_release,
    verify_release,
)
from tests.test_publish import files_of, make_run


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signed release, its bundle, and the publisher's and a stranger's public keys."""
    root = tmp_path_factory.mktemp("signed")
    publisher = generate_key_pair(root / "publisher.pem", passphrase=b"")
    stranger = generate_key_pair(root / "stranger.pem", passphrase=b"")
    run_dir, cfg = make_run(root / "run")
    cfg.publish.sign_key = str(publisher.private_key)
    release = build_release(run_dir, cfg)
    bundle = bundle_release(release, root / "wolof-v1.tar", public_key=publisher.public_key)
    return {"release": release, "bundle": bundle, "public": publisher.public_key,
            "stranger_public": stranger.public_key, "stranger_private": stranger.private_key}


def rewrite(src: Path, dest: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """A copy of bundle ``src`` with ``change(members) -> [(TarInfo, bytes | None)]`` applied."""
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in change(members):
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def nothing_left(folder: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_bundle_round_trip(tmp_path: Path, signed: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle = signed["bundle"]
    with tarfile.open(bundle) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    # one top folder named after the bundle; manifest and signature first; regular files, 0644, owner 0, time 0
    assert names[:2] == ["wolof-v1/manifest.json", f"wolof-v1/{SIGNATURE_NAME}"]
    assert sorted(names[2:]) == names[2:]
    assert all(m.isreg() and m.mode == 0o644 and m.uid == 0 and m.mtime == 0 for m in members)
    assert {n.removeprefix("wolof-v1/") for n in names} == set(files_of(signed["release"]))
    # the same release gives the same bytes
    again = bundle_release(signed["release"], tmp_path / "wolof-v1.tar")
    assert again.read_bytes() == bundle.read_bytes()

    out = tmp_path / "unpacked"
    report = unbundle_release(bundle, out, public_key=signed["public"])
    assert report.ok and report.signer and report.path == out
    assert files_of(out) == files_of(signed["release"])
    # through the command line, into an existing empty folder (a mount point)
    mount = tmp_path / "mount"
    mount.mkdir()
    assert main(["-q", "publish", "unbundle", str(bundle), "--out", str(mount), "--public-key", str(signed["public"])]) == 0
    assert "OK" in capsys.readouterr().out and files_of(mount) == files_of(signed["release"])
    assert main(["-q", "publish", "bundle", str(signed["release"]), "--out", str(tmp_path / "cli.tar")]) == 0
    assert (tmp_path / "cli.tar").read_bytes() != b""


def test_bundle_refuses_a_broken_release_or_an_existing_file(tmp_path: Path, signed: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="exists"):
        bundle_release(signed["release"], signed["bundle"])
    run_dir, cfg = make_run(tmp_path / "run")
    release = build_release(run_dir, cfg)
    (release / "new_tokens.json").write_text("[]")
    with pytest.raises(VerificationError, match="refusing to bundle .*new_tokens.json"):
        bundle_release(release, tmp_path / "broken.tar")
    assert not (tmp_path / "broken.tar").exists() and not (tmp_path / ".tmp-broken.tar").exists()
    (release / "new_tokens.json").unlink()
    with pytest.raises(VerificationError, match="unsigned"):  # a key asks for the signature as well
        bundle_release(release, tmp_path / "unsigned.tar", public_key=signed["public"])


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hardlink", "device", "fifo", "pickle"])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path: Path, signed: dict[str, Path],
                                                               case: str) -> None:
    def add(members):  # type: ignore[no-untyped-def]
        extra = tarfile.TarInfo()
        data: bytes | None = None
        if case == "dotdot":
            extra.name, data = "wolof-v1/../../escaped.txt", b"x"
        elif case == "absolute":
            extra.name, data = "/tmp/escaped.txt", b"x"
        elif case == "symlink":
            extra.name, extra.type, extra.linkname = "wolof-v1/notes.txt", tarfile.SYMTYPE, "/etc/passwd"
        elif case == "hardlink":
            extra.name, extra.type, extra.linkname = "wolof-v1/notes.txt", tarfile.LNKTYPE, "/etc/passwd"
        elif case == "device":
            extra.name, extra.type, extra.devmajor, extra.devminor = "wolof-v1/dev", tarfile.CHRTYPE, 1, 3
        elif case == "fifo":
            extra.name, extra.type = "wolof-v1/pipe", tarfile.FIFOTYPE
        else:
            extra.name, data = "wolof-v1/adapter_model.bin", pickle.dumps({"weights": 1})
        return [*members, (extra, data)]

    bad = rewrite(signed["bundle"], tmp_path / "bad.tar", add)
    out = tmp_path / "out"
    expected = {"dotdot": r"climbs out", "absolute": "absolute path", "symlink": "is a link", "hardlink": "is a link",
                "device": "device file", "fifo": "named pipe", "pickle": "pickled file"}[case]
    with pytest.raises(BundleError, match=rf"bad\.tar is refused, nothing was written: .*{expected}"):
        unbundle_release(bad, out, public_key=signed["public"])
    nothing_left(tmp_path, out)
    assert not (tmp_path.parent / "escaped.txt").exists() and not Path("/tmp/escaped.txt").exists()


def test_tampered_bundle_leaves_nothing(tmp_path: Path, signed: dict[str, Path]) -> None:
    def change_config(members):  # type: ignore[no-untyped-def]
        return [(m, b'{"peft_type": "LORA", "r": 64}' if m.name.endswith("adapter_config.json") else d)
                for m, d in members]

    tampered = rewrite(signed["bundle"], tmp_path / "tampered.tar", change_config)
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match=r"adapter_config\.json.*nothing was kept"):
        unbundle_release(tampered, out, public_key=signed["public"])
    nothing_left(tmp_path, out)
    # without a key the manifest alone catches a changed file too
    with pytest.raises(VerificationError, match=r"mismatched \(adapter_config\.json\)"):
        unbundle_release(tampered, out)
    nothing_left(tmp_path, out)
    # signed by someone else
    with pytest.raises(VerificationError, match="another key"):
        unbundle_release(signed["bundle"], out, public_key=signed["stranger_public"])
    nothing_left(tmp_path, out)

    # an unsigned bundle, unpacked with a key
    def unsign(members):  # type: ignore[no-untyped-def]
        return [(m, d) for m, d in members if not m.name.endswith(SIGNATURE_NAME)]

    unsigned = rewrite(signed["bundle"], tmp_path / "unsigned.tar", unsign)
    with pytest.raises(VerificationError, match="unsigned"):
        unbundle_release(unsigned, out, public_key=signed["public"])
    nothing_left(tmp_path, out)
    assert unbundle_release(unsigned, out).ok  # without a key it is what it is: an unsigned release


def test_truncated_or_foreign_files_are_refused(tmp_path: Path, signed: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = signed["bundle"].read_bytes()
    out = tmp_path / "out"
    with tarfile.open(signed["bundle"]) as archive:  # the end of the last file (the tar's zero padding may be long)
        last = max(archive.getmembers(), key=lambda m: m.offset_data)
    assert last.size > 1
    for cut in (len(data) // 2, last.offset_data + last.size // 2, 700):
        short = tmp_path / "short.tar"
        short.write_bytes(data[:cut])
        with pytest.raises((BundleError, VerificationError), match=r"short\.tar|nothing was kept"):
            unbundle_release(short, out, public_key=signed["public"])
        nothing_left(tmp_path, out)

    for name, content in (("notes.tar", b"these are plain notes, not an archive\n" * 20), ("empty.tar", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BundleError, match=rf"{name} is not a tar file"):
            unbundle_release(tmp_path / name, out, public_key=signed["public"])
        nothing_left(tmp_path, out)
    assert main(["-q", "publish", "unbundle", str(tmp_path / "notes.tar"), "--out", str(out)]) == 1
    assert "notes.tar is not a tar file" in capsys.readouterr().err

    # a tar file that holds something else than a release
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        info = tarfile.TarInfo("photos/cat.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))
    with pytest.raises(BundleError, match="not a langkit release bundle"):
        unbundle_release(other, out)
    nothing_left(tmp_path, out)
    with pytest.raises(BundleError, match="not found"):
        unbundle_release(tmp_path / "absent.tar", out)
    with pytest.raises(KeyFileError, match="not found"):
        unbundle_release(signed["bundle"], out, public_key=tmp_path / "absent.pub.pem")


def test_interrupted_unbundle_leaves_nothing(tmp_path: Path, signed: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt  # Ctrl-C after every file was written, before the check ended

    monkeypatch.setattr("langkit.publish.manifest.verify_release", interrupted)  # keep_if_verified's
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        unbundle_release(signed["bundle"], out, public_key=signed["public"])
    nothing_left(tmp_path, out)
    mount = tmp_path / "mount"
    mount.mkdir()
    with pytest.raises(KeyboardInterrupt):
        unbundle_release(signed["bundle"], mount, public_key=signed["public"])
    assert list(mount.iterdir()) == []
    monkeypatch.setattr("langkit.publish.manifest.verify_release", verify_release)
    assert unbundle_release(signed["bundle"], mount, public_key=signed["public"]).ok


def test_unbundle_into_a_folder_with_files_is_refused(tmp_path: Path, signed: dict[str, Path]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    with pytest.raises(BundleError, match="not an empty folder"):
        unbundle_release(signed["bundle"], out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
