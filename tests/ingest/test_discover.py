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


def links_tree(tmp_path):
    """A folder with a link to a file inside it, to a secret outside (absolute and `..` forms)
    and to a folder outside."""
    outside = tmp_path / "outside"
    tree(outside, {"secret.md": b"the password is swordfish", "notes/n.md": b"x"})
    root = tmp_path / "docs"
    tree(root, {"a.md": b"x", "sub/b.md": b"x"})
    os.symlink(root / "sub" / "b.md", root / "inside.md")
    os.symlink(outside / "secret.md", root / "absolute.md")
    os.symlink("../../outside/secret.md", root / "sub" / "relative.md")
    os.symlink("/etc/passwd", root / "passwd.txt")
    os.symlink(outside / "notes", root / "notes")
    return root


def test_links_are_followed_only_inside_the_folder_by_default(tmp_path):
    found = discover(links_tree(tmp_path), IngestConfig(), EXTENSIONS)
    assert [c.source for c in found.files] == ["a.md", "inside.md", "sub/b.md"]
    reasons = {s.source: s for s in found.skipped}
    assert sorted(reasons) == ["absolute.md", "notes", "passwd.txt", "sub/relative.md"]
    assert all(not s.error for s in found.skipped)  # policy skips: the exit status stays 0
    assert reasons["passwd.txt"].reason == ("link to /etc/passwd, outside the folder: not followed "
                                            "(set ingest.follow_links: all to follow links anywhere)")
    assert str(tmp_path / "outside" / "secret.md") in reasons["sub/relative.md"].reason
    assert reasons["notes"].reason.startswith("folder link not followed")


def test_follow_links_none_and_all(tmp_path):
    root = links_tree(tmp_path)
    none = discover(root, IngestConfig(follow_links="none"), EXTENSIONS)
    assert [c.source for c in none.files] == ["a.md", "sub/b.md"]
    assert "ingest.follow_links: none" in {s.source: s.reason for s in none.skipped}["inside.md"]
    every = discover(root, IngestConfig(follow_links="all"), EXTENSIONS)
    assert [c.source for c in every.files] == ["a.md", "absolute.md", "inside.md", "passwd.txt",
                                               "sub/b.md", "sub/relative.md"]


def test_names_that_are_not_utf8_get_a_lossless_printable_source(tmp_path):
    (tmp_path / os.fsdecode(b"x\xff\xe9.md")).write_bytes(b"# t\nhi")
    (tmp_path / "caf\u00e9\nline.md").write_bytes(b"x")
    found = discover(tmp_path, IngestConfig(), EXTENSIONS)
    assert [c.source for c in found.files] == ["caf\u00e9\nline.md", "x\\xff\\xe9.md"]
    assert all(c.path.exists() for c in found.files)
    from rag_bot.names import shown

    assert shown("caf\u00e9\nline.md") == "caf\u00e9\\nline.md"
