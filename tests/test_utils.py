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
