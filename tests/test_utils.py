"""The shared folder swap (checkpoints, the release, tokenizer folders use it)."""

from __future__ import annotations

from pathlib import Path

from langkit.utils import replace_dir, temp_dir


def _folder_with(path: Path, name: str, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text, encoding="utf-8")
    return path


def test_replace_dir_puts_the_new_folder_in_place_of_a_folder_or_a_link(tmp_path: Path) -> None:
    dest = _folder_with(tmp_path / "release", "old.txt", "old")
    new = _folder_with(temp_dir(dest), "new.txt", "new")
    assert replace_dir(new, dest) == dest
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]  # no temporary or old folder left

    # A link to a folder elsewhere: the link is replaced; the folder it pointed to is not touched.
    elsewhere = _folder_with(tmp_path / "elsewhere", "kept.txt", "kept")
    link = tmp_path / "current"
    link.symlink_to(elsewhere, target_is_directory=True)
    replace_dir(_folder_with(temp_dir(link), "new.txt", "newer"), link)
    assert not link.is_symlink() and (link / "new.txt").read_text("utf-8") == "newer"
    assert (elsewhere / "kept.txt").read_text("utf-8") == "kept"


def test_temp_dir_clears_what_a_crashed_run_left(tmp_path: Path) -> None:
    dest = tmp_path / "checkpoint"
    leftover = _folder_with(temp_dir(dest), "half-written.bin", "x")
    again = temp_dir(dest)
    assert again == leftover and list(again.iterdir()) == []


def test_replace_dir_refuses_a_file_and_clears_what_a_crashed_swap_left(tmp_path: Path) -> None:
    import pytest

    precious = tmp_path / "notes.txt"
    precious.write_text("keep", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is a file"):
        replace_dir(_folder_with(tmp_path / "new", "a.txt", "a"), precious)
    assert precious.read_text("utf-8") == "keep"

    # A crash between the two renames of an earlier swap left links under the hidden names.
    dest = _folder_with(tmp_path / "tokenizer", "old.txt", "old")
    elsewhere = _folder_with(tmp_path / "elsewhere", "kept.txt", "kept")
    for leftover in (tmp_path / ".old-tokenizer", tmp_path / ".tmp-tokenizer"):
        leftover.symlink_to(elsewhere, target_is_directory=True)
    replace_dir(_folder_with(temp_dir(dest), "new.txt", "new"), dest)
    assert [p.name for p in dest.iterdir()] == ["new.txt"] and (elsewhere / "kept.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "new", "notes.txt", "tokenizer"]


def test_replace_dir_puts_the_old_folder_back_when_the_new_one_cannot_go_in(tmp_path: Path, monkeypatch) -> None:
    import os

    import pytest

    dest = _folder_with(tmp_path / "release", "old.txt", "old")
    new = _folder_with(temp_dir(dest), "new.txt", "new")
    real_replace, calls = os.replace, []

    def failing_second(src, dst):  # the old folder moves aside, then the new one fails to go in
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk quota exceeded")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(OSError, match="quota"):
        replace_dir(new, dest)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (dest / "old.txt").read_text("utf-8") == "old" and not (tmp_path / ".old-release").exists()


def test_tests_fill_a_temporary_cache_never_the_users_own():
    import datasets.config
    import matplotlib
    from huggingface_hub import constants

    from langkit.utils import cache_dir
    from tests.conftest import TEST_CACHE

    users = Path.home() / ".cache"
    for path in (cache_dir(), Path(constants.HF_HUB_CACHE), Path(datasets.config.HF_DATASETS_CACHE),
                 Path(matplotlib.get_cachedir())):
        assert TEST_CACHE in path.parents and users not in path.parents, path
