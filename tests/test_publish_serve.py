"""langkit serve on a release: what is refused before any model loads, and what serving gpt-oss costs.
(The whole path, a signed release bundled, unbundled, served and scored, is in tests/test_pipeline.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from langkit.cli import main
from langkit.publish import build_release, generate_key_pair
from langkit.publish.manifest import PublishError
from langkit.publish.serve import servable_from_release, weight_memory
from tests.test_publish import make_run


def _release(tmp_path: Path) -> Path:
    run_dir, cfg = make_run(tmp_path / "run")
    release = tmp_path / "agency" / "wolof-v1"
    shutil.copytree(build_release(run_dir, cfg), release)
    return release


def test_serve_refuses_a_release_that_does_not_verify_before_loading_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = _release(tmp_path)
    merged = release.parent / "wolof-v1-merged"
    key = generate_key_pair(tmp_path / "keys" / "publisher.pem", passphrase=b"")
    # unsigned, with the publisher's key given: refused
    assert main(["-q", "serve", str(release), "--public-key", str(key.public_key)]) == 1
    assert "not served" in capsys.readouterr().err
    # a file changed (the adapter's config), manifest only: refused, naming the file
    with open(release / "adapter_config.json", "a", encoding="utf-8") as f:
        f.write(" ")
    assert main(["-q", "serve", str(release)]) == 1
    err = capsys.readouterr().err
    assert "mismatched (adapter_config.json)" in err and "not served" in err
    assert not merged.exists() and sorted(p.name for p in release.parent.iterdir()) == ["wolof-v1"]


def test_the_servable_folder_goes_beside_the_release_never_inside_or_over_a_foreign_folder(tmp_path: Path) -> None:
    release = _release(tmp_path)
    for inside in (release / "merged", release, release.parent):
        with pytest.raises(PublishError, match="beside the release"):
            servable_from_release(release, inside)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match="not written by langkit serve"):
        servable_from_release(release, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_serve_tells_a_run_from_a_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = make_run(tmp_path / "run")
    assert main(["-q", "serve", str(run_dir.root), "--public-key", str(tmp_path / "pub.pem")]) == 2
    assert "--public-key checks a release" in capsys.readouterr().err
    assert main(["-q", "serve", str(tmp_path)]) == 2
    assert "neither a langkit release" in capsys.readouterr().err


def test_weight_memory_of_gpt_oss_as_released_and_merged() -> None:
    """The README's serving figures, counted from langkit.models' architectures."""
    small, large = weight_memory("openai/gpt-oss-20b"), weight_memory("openai/gpt-oss-120b")
    assert small.parameters == 20_914_757_184 and large.parameters == 116_829_156_672
    assert 13.7e9 < small.mxfp4_bytes < 13.8e9 and 41.8e9 < small.bf16_bytes < 41.9e9
    assert 65.2e9 < large.mxfp4_bytes < 65.3e9 and 233.6e9 < large.bf16_bytes < 233.7e9
    assert (small.kv_bytes_per_token, large.kv_bytes_per_token) == (49_152, 73_728)
    # each new token adds a row to the embeddings and one to the output layer: 2 x 2,880 parameters
    assert weight_memory("openai/gpt-oss-20b", new_tokens=8000).parameters - small.parameters == 8000 * 2 * 2880
