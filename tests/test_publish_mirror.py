"""`langkit publish download` against a real Hub mirror: olah (PyPI), in offline mode, serving a signed release
from a local git repository, as an agency would run it inside its own network (README: "A mirror inside
your network").

olah cannot share langkit's environment (fastapi-utils pins psutil < 6, ipython needs psutil >= 7), so it runs
from its own: ``make mirror-env`` makes ``.venv-olah``; ``$LANGKIT_OLAH_CLI`` or an ``olah-cli`` on PATH work
too. Without one the test is skipped, saying why."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from langkit.publish import (
    SIGNATURE_NAME,
    PublishError,
    VerificationError,
    download_release,
    generate_key_pair,
)
from tests.test_publish import files_of, make_run

REPO_ROOT = Path(__file__).resolve().parents[1]
ORG, NAME = "agency-mirror", "wolof-swahili-lora"


def olah_cli() -> str | None:
    for candidate in (os.environ.get("LANGKIT_OLAH_CLI"), str(REPO_ROOT / ".venv-olah/bin/olah-cli"),
                      shutil.which("olah-cli")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=langkit-test", "-c", "user.email=test@langkit.invalid",
                    "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """olah on 127.0.0.1, offline, serving ORG/NAME (a signed release committed and tagged v0.1.0) from a
    local git repository; huggingface_hub pointed at it."""
    cli = olah_cli()
    if cli is None:
        pytest.skip("olah is not installed: `make mirror-env` (or set LANGKIT_OLAH_CLI)")
    if shutil.which("git") is None:
        pytest.skip("olah serves local repositories through git, which is not installed")

    key = generate_key_pair(tmp_path / "keys/publisher.pem", passphrase=b"")
    run_dir, cfg = make_run(tmp_path / "run")
    cfg.publish.sign_key = str(key.private_key)
    from langkit.publish import build_release

    release = build_release(run_dir, cfg)
    # the agency's mirror: MIRRORS/models/ORG/NAME is a git repository of the release
    repo = tmp_path / "mirrors/models" / ORG / NAME
    shutil.copytree(release, repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "langkit release v0.1.0")
    git(repo, "tag", "v0.1.0")

    port = free_port()
    config = tmp_path / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{tmp_path / "olah-cache"}"\n'
        f'mirrors-path = ["{tmp_path / "mirrors"}"]\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "[accessibility]\noffline = true\n", encoding="utf-8")
    log = open(tmp_path / "olah.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([cli, "-c", str(config), "--log-path", str(tmp_path / "olah-logs")],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"olah did not start: {(tmp_path / 'olah.log').read_text(errors='replace')[-2000:]}")
                time.sleep(0.2)
        # huggingface_hub talks to the mirror: offline mode off for it, HF_ENDPOINT on it, as an agency sets it
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield {"endpoint": endpoint, "release": release, "repo": repo, "public": key.public_key,
               "stranger": generate_key_pair(tmp_path / "keys/stranger.pem", passphrase=b"").public_key}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_download_from_an_olah_mirror(tmp_path: Path, mirror: dict[str, object]) -> None:
    release, public = Path(str(mirror["release"])), Path(str(mirror["public"]))
    down = tmp_path / "down"
    report = download_release(f"{ORG}/{NAME}", down, revision="v0.1.0", public_key=public)
    assert report.ok and report.signer
    assert {p: d for p, d in files_of(down).items() if not p.startswith(".")} == files_of(release)
    assert (down / SIGNATURE_NAME).is_file()
    # main as well, and the same without a key (the manifest alone)
    assert download_release(f"{ORG}/{NAME}", tmp_path / "main").ok

    # signed by someone else: refused, nothing kept
    with pytest.raises(VerificationError, match="another key"):
        download_release(f"{ORG}/{NAME}", tmp_path / "other", public_key=Path(str(mirror["stranger"])))
    assert not (tmp_path / "other").exists()
    # a repository or revision the mirror does not have: named, nothing kept
    with pytest.raises(PublishError, match=rf"cannot download {ORG}/absent@main.*Nothing was kept"):
        download_release(f"{ORG}/absent", tmp_path / "absent")
    with pytest.raises(PublishError, match=r"cannot download .*@v9\.9\.9.*Nothing was kept"):
        download_release(f"{ORG}/{NAME}", tmp_path / "absent", revision="v9.9.9")
    assert not (tmp_path / "absent").exists()


def test_a_mirror_serving_a_changed_file_is_refused(tmp_path: Path, mirror: dict[str, object]) -> None:
    # someone with write access to the mirror's repository changes a file and rewrites the manifest
    from langkit.publish import write_manifest

    repo = Path(str(mirror["repo"]))
    (repo / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 64}')
    write_manifest(repo)  # the manifest leaves the clone's .git/ out, as it does the Hub's .gitattributes
    git(repo, "commit", "-q", "-am", "tampered")
    assert ".git/HEAD" not in (repo / "manifest.json").read_text()
    assert download_release(f"{ORG}/{NAME}", tmp_path / "fooled").ok  # the manifest alone is fooled
    with pytest.raises(VerificationError, match=r"adapter_config\.json.*nothing was kept"):
        download_release(f"{ORG}/{NAME}", tmp_path / "down", public_key=Path(str(mirror["public"])))
    assert not (tmp_path / "down").exists()
    # the tagged release is still the one the publisher signed
    assert download_release(f"{ORG}/{NAME}", tmp_path / "v1", revision="v0.1.0",
                            public_key=Path(str(mirror["public"]))).ok
