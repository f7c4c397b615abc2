import os

from ingest.discover import discover, matches
from rag_bot.config import IngestConfig

EXTENSIONS = {".md", ".txt", ".pdf"}


def tree(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_walks_recursively_skipping_hidden_and_unsupported(tmp_path):
    tree(tmp_path, {"a.md": b"x", "sub/b.txt": b"x", "sub/deeper/c.pdf": b"x", ".hidden/d.md": b"x",
                    "sub/.e.md": b"x", "image.png": b"x", "notes": b"x"})
    found = discover(tmp_path, IngestConfig(), EXTENSIONS)
    assert [c.source for c in found.files] == ["a.md", "sub/b.txt", "sub/deeper/c.pdf"]
    assert found.ignored == 2 and found.skipped == []


def test_include_and_exclude_globs(tmp_path):
    tree(tmp_path, {"a.md": b"x", "drafts/b.md": b"x", "c.txt": b"x", "deep/d.md": b"x"})
    config = IngestConfig(include=["**/*.md"], exclude=["drafts/*"])
    assert [c.source for c in discover(tmp_path, config, EXTENSIONS).files] == ["a.md", "deep/d.md"]
    assert matches("x/y.md", ["*.md"]) and matches("y.md", ["**/*.md"]) and not matches("y.txt", ["*.md"])


def test_broken_links_large_files_and_devices_are_skipped_with_reasons(tmp_path):
    tree(tmp_path, {"ok.md": b"x", "big.txt": b"x" * (2 * 1024 * 1024)})
    os.symlink(tmp_path / "gone.md", tmp_path / "broken.md")
    os.symlink(tmp_path / "ok.md", tmp_path / "link.md")
    os.mkfifo(tmp_path / "pipe.txt")
    found = discover(tmp_path, IngestConfig(max_file_mb=1), EXTENSIONS)
    assert [c.source for c in found.files] == ["link.md", "ok.md"]
    reasons = {s.source: (s.reason, s.error) for s in found.skipped}
    assert reasons["broken.md"][0].startswith("broken symbolic link") and reasons["broken.md"][1]
    assert reasons["big.txt"] == ("2.0 MB is over ingest.max_file_mb (1 MB)", False)
    assert reasons["pipe.txt"] == ("not a regular file", True)


def test_folder_links_are_not_followed(tmp_path):
    tree(tmp_path, {"real/a.md": b"x"})
    os.symlink(tmp_path, tmp_path / "real" / "loop")
    assert [c.source for c in discover(tmp_path, IngestConfig(), EXTENSIONS).files] == ["real/a.md"]
