"""The ingest job end to end with fake embeddings and a real Chroma store in a temp folder."""

import os
import shutil

import pytest

from ingest.index import read_files
from ingest.pipeline import run_ingest
from rag_bot.errors import StoreError
from rag_bot.store import get_collection, open_client, recorded_model
from tests.conftest import EXAMPLE_DOCS, EXAMPLE_FILES, FakeEmbeddings, make_config


def collection_state(config):
    collection = get_collection(open_client(config), config.store.collection)
    got = collection.get(include=["metadatas"])
    return sorted(got["ids"]), sorted((m["source"], m["chunk_index"]) for m in got["metadatas"])


def ingest(config, folder, **kwargs):
    kwargs.setdefault("embeddings", FakeEmbeddings(size=16))
    return run_ingest(config, folder, progress=False, **kwargs)


def fresh_config(tmp_path, name):
    return make_config(tmp_path / name, embedding={"model": "fake"}, chunking={"size": 40, "overlap": 8})


def test_first_ingest_stores_every_example_document(config, docs_copy):
    report = ingest(config, docs_copy)
    names = sorted(p.name for p in docs_copy.iterdir())
    assert sorted(report.added) == names and report.exit_code == 0
    ids, chunks = collection_state(config)
    assert len(ids) == len(set(ids)) == report.chunks_written == report.chunks_total > len(names)
    assert {source for source, _ in chunks} == set(names)
    pdf_pages = {m["page"] for m in get_collection(open_client(config), "rag_bot").get(
        where={"source": "how-retrieval-works.pdf"})["metadatas"]}
    assert pdf_pages == {1, 2, 3}
    assert recorded_model(get_collection(open_client(config), "rag_bot")) == ("fake", 16)


def test_unchanged_folder_embeds_nothing(config, docs_copy):
    ingest(config, docs_copy)
    embeddings = FakeEmbeddings(size=16)
    report = ingest(config, docs_copy, embeddings=embeddings)
    assert embeddings.embedded == 0 and not embeddings.loaded
    assert report.to_json()["files"] == {"added": 0, "updated": 0, "deleted": 0, "unchanged": EXAMPLE_FILES, "skipped": 0}
    assert report.chunks_written == report.chunks_deleted == 0


def test_touched_but_identical_file_is_unchanged(config, docs_copy):
    ingest(config, docs_copy)
    path = docs_copy / "faq.html"
    path.write_bytes(path.read_bytes())  # new mtime, same content
    report = ingest(config, docs_copy)
    assert report.updated == [] and "faq.html" in report.unchanged


def test_files_read_by_an_older_loader_are_read_again(config, docs_copy, monkeypatch):
    from ingest import loaders

    ingest(config, docs_copy)
    rows = read_files(config)
    assert rows["how-retrieval-works.pdf"].reader == loaders.READER_VERSIONS[".pdf"] and rows["faq.html"].reader == loaders.READER_VERSIONS[".html"]
    monkeypatch.setitem(loaders.READER_VERSIONS, ".pdf", loaders.READER_VERSIONS[".pdf"] + 1)  # the PDF reader changed
    embeddings = FakeEmbeddings(size=16)
    report = ingest(config, docs_copy, embeddings=embeddings)
    assert report.updated == ["how-retrieval-works.pdf"] and len(report.unchanged) == EXAMPLE_FILES - 1
    assert embeddings.embedded == 0  # read again, but its text did not change: nothing embedded
    assert read_files(config)["how-retrieval-works.pdf"].reader == loaders.READER_VERSIONS[".pdf"]
    assert ingest(config, docs_copy).updated == []


def test_edit_delete_add_equals_a_fresh_ingest(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    guide = docs_copy / "ingesting.md"
    guide.write_text(guide.read_text().replace("Bad files", "Broken files") + "\nOne more closing line.\n")
    (docs_copy / "faq.html").unlink()
    (docs_copy / "new-notes.txt").write_text("Release notes: version 0.1 adds incremental ingest.\n")
    embeddings = FakeEmbeddings(size=16)
    report = ingest(config, docs_copy, embeddings=embeddings)
    assert (report.added, report.updated, report.deleted) == (["new-notes.txt"], ["ingesting.md"], ["faq.html"])
    assert report.chunks_deleted > 0
    # Unchanged chunks of the edited file keep their ids and are not embedded again.
    assert embeddings.embedded == report.chunks_written < read_files(config)["ingesting.md"].chunks + 1
    fresh = fresh_config(tmp_path, "fresh")
    ingest(fresh, docs_copy)
    assert collection_state(config) == collection_state(fresh)


@pytest.mark.parametrize("fail_after_calls", [0, 1, 3])
def test_interrupted_run_converges_to_a_fresh_ingest(tmp_path, config, docs_copy, fail_after_calls):
    config = config.model_copy(update={"ingest": config.ingest.model_copy(update={"write_batch": 5})})  # many crash points
    ingest(config, docs_copy)
    (docs_copy / "configuration.md").write_text("# Configuration\n\nEverything changed here.\n" * 30)
    (docs_copy / "troubleshooting.md").unlink()
    for i in range(5):
        (docs_copy / f"extra{i}.txt").write_text(f"Extra document {i}. " * 60)
    with pytest.raises(KeyboardInterrupt):
        ingest(config, docs_copy, embeddings=FakeEmbeddings(size=16, fail_after_calls=fail_after_calls))
    ingest(config, docs_copy)
    fresh = fresh_config(tmp_path, "fresh")
    ingest(fresh, docs_copy)
    assert collection_state(config) == collection_state(fresh)
    assert sum(r.chunks for r in read_files(config).values()) == len(collection_state(config)[0])


def test_orphan_chunks_from_a_crash_between_store_and_record_are_removed(config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    collection.add(ids=["orphan"], embeddings=[[0.1] * 16], metadatas=[{"source": "gone.md"}], documents=["x"])
    report = ingest(config, docs_copy)
    assert "orphan" not in collection_state(config)[0] and report.chunks_total == collection.count()


def test_dry_run_writes_nothing(config, docs_copy):
    report = ingest(config, docs_copy, dry_run=True)
    assert len(report.added) == EXAMPLE_FILES and report.chunks_written > 0 and report.dry_run
    assert not config.data_dir.exists()
    ingest(config, docs_copy)
    (docs_copy / "faq.html").unlink()
    before = collection_state(config)
    report = ingest(config, docs_copy, dry_run=True)
    assert report.deleted == ["faq.html"] and report.chunks_deleted > 0
    assert collection_state(config) == before


def test_rebuild_starts_afresh_and_another_model_is_refused(config, docs_copy):
    ingest(config, docs_copy)
    other = config.model_copy(update={"embedding": config.embedding.model_copy(update={"model": "other"})})
    with pytest.raises(StoreError, match="built with 'fake'.*--rebuild"):
        ingest(other, docs_copy)
    report = ingest(other, docs_copy, rebuild=True)
    assert len(report.added) == EXAMPLE_FILES
    assert recorded_model(get_collection(open_client(other), "rag_bot"))[0] == "other"


def test_another_folder_is_refused(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    other = tmp_path / "other"
    shutil.copytree(docs_copy, other)
    with pytest.raises(StoreError, match="mirrors .*set store.collection"):
        ingest(config, other)
    with pytest.raises(StoreError, match="mirrors .*set store.collection"):
        ingest(config, other, dry_run=True)


def test_dry_run_refuses_what_a_real_run_would(config, docs_copy):
    ingest(config, docs_copy)
    other = config.model_copy(update={"embedding": config.embedding.model_copy(update={"model": "other"})})
    with pytest.raises(StoreError, match="built with 'fake'"):
        ingest(other, docs_copy, dry_run=True)
    assert len(ingest(other, docs_copy, dry_run=True, rebuild=True).added) == EXAMPLE_FILES


def test_emptied_store_is_detected_and_refilled(config, docs_copy):
    first = ingest(config, docs_copy)
    client = open_client(config)
    client.delete_collection("rag_bot")
    report = ingest(config, docs_copy)
    assert report.chunks_total == first.chunks_total and len(report.added) == EXAMPLE_FILES


def test_bad_files_are_reported_and_the_rest_is_stored(config, docs_copy):
    (docs_copy / "corrupt.pdf").write_bytes(b"%PDF-1.7\nthis is not a pdf at all")
    (docs_copy / "binary.txt").write_bytes(bytes(range(256)) * 50)
    (docs_copy / "empty.md").write_bytes(b"")
    (docs_copy / "latin1.txt").write_bytes("Café au lait, crème brûlée et façade. ".encode("latin-1") * 5)
    (docs_copy / "huge.txt").write_bytes(b"word " * 300_000)
    (docs_copy / "dangling.md").symlink_to(docs_copy / "nowhere.md")
    config = config.model_copy(update={"ingest": config.ingest.model_copy(update={"max_file_mb": 1})})
    report = ingest(config, docs_copy)
    reasons = {s.source: s.reason for s in report.skipped}
    assert set(reasons) == {"corrupt.pdf", "binary.txt", "empty.md", "huge.txt", "dangling.md"}
    assert sorted(report.added) == sorted([p.name for p in EXAMPLE_DOCS.iterdir()] + ["latin1.txt"])
    assert report.exit_code == 1
    assert {s for s, _ in collection_state(config)[1]} == set(report.added)
    # A file that breaks after it was ingested keeps its chunks: nothing stored is lost.
    before = collection_state(config)
    (docs_copy / "faq.html").write_bytes(b"\x00\x01 binary now")
    report = ingest(config, docs_copy)
    assert "faq.html" in {s.source for s in report.skipped}
    assert collection_state(config) == before


def test_only_policy_skips_exit_zero(config, docs_copy):
    (docs_copy / "empty.txt").write_bytes(b"")
    report = ingest(config, docs_copy)
    assert [s.source for s in report.skipped] == ["empty.txt"] and report.exit_code == 0


def test_odd_file_names_are_stored_and_the_run_goes_on(config, docs_copy, caplog):
    (docs_copy / os.fsdecode(b"x\xff\xe9.md")).write_bytes(b"# Odd\n\nA file whose name is not UTF-8.")
    (docs_copy / "two\nlines.md").write_bytes(b"# Two\n\nA file with a newline in its name.")
    os.symlink(docs_copy / "nowhere.md", docs_copy / "bad\nlink.md")
    report = ingest(config, docs_copy)
    assert {"x\\xff\\xe9.md", "two\nlines.md"} <= set(report.added)
    assert report.exit_code == 1 and [s.source for s in report.skipped] == ["bad\nlink.md"]
    assert {s for s, _ in collection_state(config)[1]} >= {"x\\xff\\xe9.md", "two\nlines.md"}
    assert any(r.getMessage().startswith("skipped bad\\nlink.md: broken symbolic link") for r in caplog.records)
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert ingest(config, docs_copy).added == []  # the stored names match the folder on the next run


def test_text_the_store_cannot_take_is_a_skip():
    from langchain_core.documents import Document

    from ingest.pipeline import check_storable
    from rag_bot.errors import InputError

    check_storable([Document(page_content="fine", metadata={"source": "a.md", "page": 1})])
    with pytest.raises(InputError, match="not valid UTF-8"):
        check_storable([Document(page_content="lone \udcff surrogate", metadata={"source": "a.md"})])


def small_batches(config, size=4):
    return config.model_copy(update={"ingest": config.ingest.model_copy(update={"write_batch": size})})


def append_a_line(folder):
    for path in sorted(folder.iterdir()):
        if path.suffix in (".md", ".txt"):
            path.write_text(path.read_text() + "\nOne more closing line.\n")


def test_small_batches_embed_only_the_chunks_that_changed(tmp_path, config, docs_copy):
    """Clean-up runs once, after every batch: a changed file's unchanged chunks keep their vectors
    even when they land in a later batch than its new chunks."""
    config = small_batches(config)
    ingest(config, docs_copy)
    before = set(collection_state(config)[0])
    append_a_line(docs_copy)
    embeddings = FakeEmbeddings(size=16)
    report = ingest(config, docs_copy, embeddings=embeddings)
    after = set(collection_state(config)[0])
    assert len(report.updated) == len([p for p in EXAMPLE_DOCS.iterdir() if p.suffix in (".md", ".txt")])
    assert embeddings.embedded == report.chunks_written == len(after - before) <= 2 * len(report.updated)
    assert report.chunks_deleted == len(before - after)


@pytest.mark.parametrize("fail_after_calls", [1, 2])
def test_a_crash_costs_only_the_unfinished_batch(tmp_path, config, docs_copy, fail_after_calls):
    config = small_batches(config, 2)
    ingest(config, docs_copy)
    before = set(collection_state(config)[0])
    append_a_line(docs_copy)
    crashed = FakeEmbeddings(size=16, fail_after_calls=fail_after_calls)
    with pytest.raises(KeyboardInterrupt):
        ingest(config, docs_copy, embeddings=crashed)
    assert before <= set(collection_state(config)[0])  # nothing searchable went missing during the run
    again = FakeEmbeddings(size=16)
    ingest(config, docs_copy, embeddings=again)
    new = set(collection_state(config)[0]) - before
    assert crashed.embedded + again.embedded == len(new)
    fresh = fresh_config(tmp_path, "fresh")
    ingest(fresh, docs_copy)
    assert collection_state(config) == collection_state(fresh)


def test_context_headers_are_embedded_and_keyword_indexed_but_not_stored(tmp_path):
    """`chunking.context_header`: each chunk's vector (and BM25 text) starts with 'title > heading';
    the stored text is the chunk alone; a store built the other way is refused with --rebuild."""
    from rag_bot.bm25 import load_bm25
    from rag_bot.store import contextual_text

    docs = tmp_path / "docs"
    docs.mkdir()
    body = " ".join(f"Sentence {i} talks about tides and the moon." for i in range(30))
    (docs / "paper.txt").write_text(f"Zygomorphic flowers of Crete\n\n{body}\n")
    (docs / "guide.md").write_text(f"# Guide\n\n## Install\n\n{body}\n")
    config = make_config(tmp_path, embedding={"model": "fake"},
                         chunking={"size": 40, "overlap": 8, "context_header": True})
    embeddings = FakeEmbeddings(size=16)
    ingest(config, docs, embeddings=embeddings)
    collection = get_collection(open_client(config), config.store.collection)
    got = collection.get(include=["documents", "metadatas", "embeddings"])
    assert len(got["ids"]) > 4
    for text, meta, vector in zip(got["documents"], got["metadatas"], got["embeddings"]):
        header = "Zygomorphic flowers of Crete" if meta["source"] == "paper.txt" else "Guide > Install"
        if meta["chunk_index"] > 0:
            assert "Zygomorphic" not in text and "Guide" not in text  # stored as the chunk alone
        assert contextual_text(text, meta) == f"{header}\n\n{text}"
        assert list(vector) == pytest.approx(embeddings.embed_documents([f"{header}\n\n{text}"])[0], abs=1e-5)
    hits = {chunk_id for chunk_id, _ in load_bm25(config, collection).search("zygomorphic crete", 50)}
    assert hits == {i for i, meta in zip(got["ids"], got["metadatas"]) if meta["source"] == "paper.txt"}
    plain = config.model_copy(update={"chunking": config.chunking.model_copy(update={"context_header": False})})
    with pytest.raises(StoreError, match=r"was chunked with size 40, overlap 8, context header, but the config "
                                         r"says size 40, overlap 8; .*--rebuild"):
        ingest(plain, docs)


def test_windows_of_chunks_store_what_one_window_stores(tmp_path, config, docs_copy, monkeypatch, capsys):
    """Chunks are read and sorted a window at a time (memory does not grow with the folder): with
    windows of 3 chunks the store, the files table and the keyword index equal a one-window run."""
    import ingest.pipeline as pipeline
    from rag_bot.bm25 import Bm25Index, bm25_path

    whole = fresh_config(tmp_path, "whole")
    ingest(whole, docs_copy)
    monkeypatch.setattr(pipeline, "SORT_WINDOW", 3)
    windowed = fresh_config(tmp_path, "windowed")
    report = run_ingest(windowed, docs_copy, progress=True, embeddings=FakeEmbeddings(size=16))
    assert report.exit_code == 0 and collection_state(windowed) == collection_state(whole)
    assert {k: (r.chunks, r.sha256) for k, r in read_files(windowed).items()} == \
        {k: (r.chunks, r.sha256) for k, r in read_files(whole).items()}
    assert "ingesting: 100%" in capsys.readouterr().err  # the bar (bytes of the files stored) reaches the end
    one, other = Bm25Index.load(bm25_path(whole)), Bm25Index.load(bm25_path(windowed))
    for query in ["incremental ingest", "reranker model", "where is the data kept"]:
        assert one.search(query, 5) == other.search(query, 5)


class Labelled(FakeEmbeddings):
    """Fake vectors that say which encoder made them; `tilt` moves every vector off the original."""

    encoder: str = "fake float32"
    tilt: float = 0.0

    def embed_documents(self, texts):
        import numpy as np

        vectors = np.asarray(super().embed_documents(texts))
        vectors[:, 0] += self.tilt
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()


def test_vectors_from_another_encoder_join_only_when_they_agree(config, docs_copy):
    from rag_bot.store import META_ENCODER, check_encoder, fresh_metadata

    def encoder_recorded():
        return fresh_metadata(get_collection(open_client(config), config.store.collection))[META_ENCODER]

    ingest(config, docs_copy, embeddings=Labelled(size=16))
    assert encoder_recorded() == "fake float32"
    append_a_line(docs_copy)
    before = collection_state(config)
    with pytest.raises(StoreError, match=r"embedded by fake float32, this config runs fake int8, and their vectors "
                                         r"differ \(cosine 0\.\d+ < 0\.995\).*--rebuild"):
        ingest(config, docs_copy, embeddings=Labelled(size=16, encoder="fake int8", tilt=1.0))
    assert collection_state(config) == before  # refused before anything was written
    with pytest.raises(StoreError, match="to query with fake int8"):
        check_encoder(get_collection(open_client(config), "rag_bot"), Labelled(size=16, encoder="fake int8", tilt=1.0),
                      False, what="query")
    report = ingest(config, docs_copy, embeddings=Labelled(size=16, encoder="fake bfloat16", tilt=0.001))
    assert report.exit_code == 0 and report.updated and encoder_recorded() == "fake bfloat16"
    ingest(config, docs_copy, embeddings=Labelled(size=16), rebuild=True)
    assert encoder_recorded() == "fake float32"
