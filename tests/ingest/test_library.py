"""The Documents tab's shelf: uploads land in the collection's folder only, under safe names, and are
ingested; deletes remove the file and its chunks. Fake embeddings, a real Chroma store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.index import read_files
from ingest.library import Library, safe_name
from ingest.pipeline import run_ingest
from rag_bot.errors import InputError, UsageError
from tests.conftest import FakeEmbeddings, make_config


@pytest.fixture
def shelf(tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "apples.md").write_text("# Apples\n\nApples grow on trees in orchards.\n")
    config = make_config(tmp_path / "store", embedding={"model": "fake"}, ingest={"max_file_mb": 0.01})
    embeddings = FakeEmbeddings(size=16)
    run_ingest(config, folder, progress=False, embeddings=embeddings)
    changes: list = []
    library = Library(config, embeddings, after_change=lambda report: changes.append(report) or "filter retrained")
    return library, folder, changes


def upload(tmp_path: Path, name: str, text: str = "# Pears\n\nPears ripen after picking.\n") -> Path:
    folder = tmp_path / "uploads" / str(len(list((tmp_path / "uploads").glob("*"))) if (tmp_path / "uploads").exists() else 0)
    folder.mkdir(parents=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, kept", [("pears.md", "pears.md"), ("../../etc/pears.md", "pears.md"),
                                        ("C:\\Users\\x\\notes.txt", "notes.txt"), ("/abs/path/a.pdf", "a.pdf"),
                                        ("100%20off.md", "100%20off.md")])
def test_an_upload_keeps_only_its_base_name(name, kept):
    assert safe_name(name) == kept


@pytest.mark.parametrize("name, message", [("..", "not a usable file name"), (".hidden.md", "not a usable file name"),
                                           ("a\nb.md", "not a usable file name"), ("", "not a usable file name"),
                                           # issue 34, defect 8: as a browser sends a newline; a reversed name
                                           ("a%0Ab.md", "not a usable file name"), ("x%7f.md", "not a usable file name"),
                                           ("invoice\u202egpj.md", r"invoice\?gpj.md: the name holds characters that "
                                                                    "reverse how it reads"),
                                           ("/etc/passwd", "cannot read files without an extension"),
                                           ("tool.exe", "cannot read .exe")])
def test_unusable_names_are_refused_with_the_reason(name, message):
    with pytest.raises(InputError, match=message):
        safe_name(name)


def test_uploads_are_copied_into_the_folder_and_ingested(shelf, tmp_path):
    library, folder, changes = shelf
    assert library.folder() == folder.resolve()
    summary = library.add([upload(tmp_path, "pears.md"), upload(tmp_path, "../escape.md", "x")])
    assert summary.startswith("Added: escape.md, pears.md\nfilter retrained\n")
    assert sorted(path.name for path in folder.iterdir()) == ["apples.md", "escape.md", "pears.md"]
    assert set(read_files(library.config)) == {"apples.md", "escape.md", "pears.md"}
    assert not list(tmp_path.glob("escape.md")) and len(changes) == 1
    rows = {row["source"]: row for row in library.rows()}
    assert rows["pears.md"]["chunks"] >= 1 and rows["pears.md"]["ingested"] > 0
    assert library.add([upload(tmp_path, "pears.md")]).startswith("Nothing changed.")  # same content again
    assert len(changes) == 1


def test_refused_uploads_are_listed_and_nothing_is_written_for_them(shelf, tmp_path):
    library, folder, _ = shelf
    outside = tmp_path / "outside.md"
    outside.write_text("kept as it was")
    os.symlink(outside, folder / "linked.md")
    big = upload(tmp_path, "big.md", "word " * 4000)  # 20 KB > ingest.max_file_mb 0.01
    summary = library.add([upload(tmp_path, "linked.md", "overwrite?"), big, upload(tmp_path, ".secret.md"),
                           upload(tmp_path, "ok.md")])
    assert "Not added: linked.md: the folder has a link or folder of that name; not replaced" in summary
    assert "Not added: big.md: 0.0191 MB is more than ingest.max_file_mb (0.01 MB)" in summary
    assert "Not added: .secret.md: not a usable file name" in summary and "Added: ok.md" in summary
    assert outside.read_text() == "kept as it was"
    assert not (folder / "big.md").exists() and not (folder / ".secret.md").exists()
    assert not [path for path in folder.iterdir() if path.name.endswith(".part")]


def test_delete_removes_the_file_and_its_chunks(shelf, tmp_path):
    library, folder, changes = shelf
    library.add([upload(tmp_path, "pears.md")])
    summary = library.remove(["pears.md", "../apples.md", "nothing.md"])
    assert "Removed: pears.md" in summary
    assert "Not deleted: ../apples.md: not a file of this collection; nothing deleted" in summary
    assert not (folder / "pears.md").exists() and (folder / "apples.md").exists()
    assert set(read_files(library.config)) == {"apples.md"} and len(changes) == 2
    assert [row["source"] for row in library.rows()] == ["apples.md"]


def test_a_collection_without_a_folder_says_to_ingest_first(tmp_path):
    library = Library(make_config(tmp_path, embedding={"model": "fake"}), FakeEmbeddings(size=16))
    assert library.folder() is None and library.rows() == []
    with pytest.raises(UsageError, match="mirrors no folder yet: run `rag-bot ingest DIR` once"):
        library.add([upload(tmp_path, "pears.md")])


def test_an_upload_never_writes_through_a_planted_partial_file_link(shelf, tmp_path):
    """Issue 34, defect 2: a hidden link at the name the partial copy used to take
    (`.NAME.PID.part`) pointed outside the folder; the copy wrote through it and renamed the link into
    place. Partial files are now created exclusively, not through a link, under an unpredictable name."""
    library, folder, _ = shelf
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("kept as it was")
    for name in (f".victim.md.{os.getpid()}.part", ".victim.md.part", "victim.md.part"):
        os.symlink(victim, folder / name)
    summary = library.add([upload(tmp_path, "victim.md", "# Victim\n\nThe uploaded text.\n")])
    assert "Added: victim.md" in summary
    assert victim.read_text() == "kept as it was"
    landed = folder / "victim.md"
    assert not landed.is_symlink() and landed.is_file() and "The uploaded text." in landed.read_text()
    assert not [path for path in folder.iterdir() if path.name.endswith(".part") and not path.is_symlink()]


def test_an_upload_refuses_a_final_name_swapped_for_a_link_during_the_copy(shelf, tmp_path, monkeypatch):
    """The final name is checked again just before the rename: a link planted there while the copy ran
    is not replaced (nothing is written through it either)."""
    library, folder, _ = shelf
    victim = tmp_path / "victim.txt"
    victim.write_text("kept as it was")
    import ingest.library as library_module

    real = library_module.shutil.copyfileobj

    def copy_then_plant(source, target, *args):
        real(source, target, *args)
        os.symlink(victim, folder / "late.md")

    monkeypatch.setattr(library_module.shutil, "copyfileobj", copy_then_plant)
    summary = library.add([upload(tmp_path, "late.md")])
    assert "Not added: late.md: the folder has a link or folder of that name; not replaced" in summary
    assert victim.read_text() == "kept as it was" and (folder / "late.md").is_symlink()
    assert not [path for path in folder.iterdir() if path.name.endswith(".part")]


def test_a_file_whose_name_is_not_utf8_can_be_deleted(shelf, tmp_path):
    """Issue 34, defect 8: the Documents tab could not delete a file whose name is not valid UTF-8
    (stored as `x\\xff.md`) and said nothing."""
    library, folder, _ = shelf
    raw = os.fsencode(folder) + b"/caf\xe9.md"
    with open(raw, "w") as handle:
        handle.write("# Cafe\n\nCoffee is served hot.\n")
    run_ingest(library.config, folder, progress=False, embeddings=library.embeddings)
    assert "caf\\xe9.md" in read_files(library.config)
    summary = library.remove(["caf\\xe9.md"])
    assert "Removed: caf\\xe9.md" in summary and not os.path.exists(raw)
    assert set(read_files(library.config)) == {"apples.md"}
