"""The image tools' shared input listing: files, folders, globs and .txt file lists."""

from __future__ import annotations

from pathlib import Path

from ovseg.cli.common import collect_inputs


def test_file_lists_folders_and_globs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1.png", "a/2.jpg", "a/notes.md", "b.png"):
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\nb.png\n\na/1.png\n/elsewhere/missing.jpg\n")
    images, problems = collect_inputs([str(listing), str(tmp_path / "a"), str(tmp_path / "*.png")])
    assert images == [
        tmp_path / "b.png",
        tmp_path / "a" / "1.png",
        Path("/elsewhere/missing.jpg"),  # reported when read, with the other failures
        tmp_path / "a" / "2.jpg",
    ]
    assert problems == []
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert collect_inputs([str(empty)]) == ([], [f"{empty}: this file list names no image"])
    skip = collect_inputs([str(tmp_path / "a")], exclude=lambda p: p.name == "1.png")[0]
    assert skip == [tmp_path / "a" / "2.jpg"]
