"""One collection, one folder, one record, one ingest at a time: all kept in the store, so that two
data_dirs (two configs, two machines) on one store share the record and never delete each other's
chunks."""

import socket
import sqlite3
import time

import pytest

from ingest import loaders

from ingest.ownership import Lease, StoreLease
from ingest.pipeline import run_ingest
from rag_bot.errors import StoreError
from rag_bot.store import META_LEASE, META_VERSION, fresh_metadata, get_collection, open_client, update_metadata
from tests.conftest import EXAMPLE_FILES, FakeEmbeddings, make_config


def ingest(config, folder, **kwargs):
    return run_ingest(config, folder, progress=False, embeddings=FakeEmbeddings(size=16), **kwargs)


def shared_store(tmp_path, name):
    """A config with its own data_dir on the store at tmp_path/shared."""
    return make_config(tmp_path / name, embedding={"model": "fake"}, chunking={"size": 40, "overlap": 8},
                       store={"path": str(tmp_path / "shared")})


def chunks_of(config):
    collection = get_collection(open_client(config), config.store.collection)
    return sorted(collection.get()["ids"])


def test_a_second_data_dir_with_another_folder_is_refused_and_nothing_is_lost(tmp_path, docs_copy):
    first, second = shared_store(tmp_path, "a"), shared_store(tmp_path, "b")
    ingest(first, docs_copy)
    stored = chunks_of(first)
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.md").write_text("# Note\n\nSomething else entirely.\n")
    with pytest.raises(StoreError, match=r"^store.collection: 'rag_bot' mirrors .*docs, not .*other; "):
        ingest(second, other)
    with pytest.raises(StoreError, match="mirrors"):
        ingest(second, other, dry_run=True)
    assert chunks_of(first) == stored
    again = ingest(first, docs_copy)
    assert len(again.unchanged) == EXAMPLE_FILES and again.chunks_total == len(stored) and again.chunks_deleted == 0


def test_a_second_data_dir_for_the_same_folder_shares_the_record(tmp_path, docs_copy):
    first, second = shared_store(tmp_path, "a"), shared_store(tmp_path, "b")
    ingest(first, docs_copy)
    stored = chunks_of(first)
    embeddings = FakeEmbeddings(size=16)
    report = run_ingest(second, docs_copy, progress=False, embeddings=embeddings)
    assert len(report.unchanged) == EXAMPLE_FILES and report.chunks_written == report.chunks_deleted == 0
    assert embeddings.embedded == 0 and chunks_of(second) == stored
    (docs_copy / "ingesting.md").write_text("# Ingesting\n\nRewritten from the second machine.\n")
    (docs_copy / "faq.html").unlink()
    changed = ingest(second, docs_copy)
    assert changed.updated == ["ingesting.md"] and changed.deleted == ["faq.html"]
    again = ingest(first, docs_copy)  # the first data_dir sees the record the second one changed
    assert len(again.unchanged) == EXAMPLE_FILES - 1 and again.chunks_written == again.chunks_deleted == 0
    fresh = shared_store(tmp_path, "fresh").model_copy(
        update={"store": first.store.model_copy(update={"path": tmp_path / "fresh-store"})})
    ingest(fresh, docs_copy)
    assert chunks_of(first) == chunks_of(fresh)


def test_a_running_ingest_elsewhere_is_refused_and_an_expired_lease_is_taken_over(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    running = Lease("t0k3n", time.time() + 60, "otherhost pid 7 record 0123")
    update_metadata(collection, {META_LEASE: running.to_value()})
    with pytest.raises(StoreError, match=r"another ingest into collection 'rag_bot' is running \(otherhost pid 7"):
        ingest(config, docs_copy)
    update_metadata(collection, {META_LEASE: Lease("t0k3n", time.time() - 1, running.holder).to_value()})
    assert len(ingest(config, docs_copy).unchanged) == EXAMPLE_FILES
    assert fresh_metadata(collection)[META_LEASE] == ""  # given back at the end


def test_our_own_killed_run_does_not_block_the_next_one(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    from ingest.index import lock_path

    dead = Lease("d34d", time.time() + 500, f"{socket.gethostname()} pid 1 lock {lock_path(config)}")
    update_metadata(collection, {META_LEASE: dead.to_value()})
    assert len(ingest(config, docs_copy).unchanged) == EXAMPLE_FILES


def test_two_leases_at_once_only_one_wins(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    first, second = StoreLease(collection, "r1", settle=0), StoreLease(collection, "r2", settle=0)
    first.acquire()
    with pytest.raises(StoreError, match="r1"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_a_change_stamps_a_new_version(config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    stamp = fresh_metadata(collection)[META_VERSION]
    ingest(config, docs_copy)
    assert fresh_metadata(collection)[META_VERSION] == stamp  # nothing changed
    (docs_copy / "new.md").write_text("# New\n\nA new file.\n")
    ingest(config, docs_copy)
    assert fresh_metadata(collection)[META_VERSION] != stamp



def test_another_chunking_recipe_is_refused_until_rebuild(config, docs_copy):
    ingest(config, docs_copy)
    other = config.model_copy(update={"chunking": config.chunking.model_copy(update={"size": 60})})
    with pytest.raises(StoreError, match=r"^chunking: collection 'rag_bot' was chunked with "
                                         r"size 40, overlap 8, but the config says size 60, overlap 8; .*--rebuild"):
        ingest(other, docs_copy)
    with pytest.raises(StoreError, match="was chunked with"):
        ingest(other, docs_copy, dry_run=True)
    assert len(ingest(other, docs_copy, rebuild=True).added) == EXAMPLE_FILES


def test_a_lost_files_table_is_rebuilt_without_re_embedding(config, docs_copy):
    from ingest.record import files_name

    ingest(config, docs_copy)
    stored = chunks_of(config)
    open_client(config).delete_collection(files_name(config.store.collection))
    embeddings = FakeEmbeddings(size=16)
    report = run_ingest(config, docs_copy, progress=False, embeddings=embeddings)
    assert len(report.added) == EXAMPLE_FILES and embeddings.embedded == 0 and report.chunks_deleted == 0
    assert chunks_of(config) == stored
    assert len(ingest(config, docs_copy).unchanged) == EXAMPLE_FILES


def test_chunks_missing_or_left_over_in_the_store_are_repaired(config, docs_copy):
    """The files table and the chunks disagree (chunks deleted by hand; a file's chunks written
    but never recorded, then the file removed): the next run repairs both, embedding only what is
    missing."""
    ingest(config, docs_copy)
    stored = chunks_of(config)
    collection = get_collection(open_client(config), "rag_bot")
    lost = collection.get(where={"source": "faq.html"}, include=[])["ids"][:2]
    collection.delete(ids=lost)
    collection.add(ids=["stray"], documents=["left over"], embeddings=[[0.1] * 16], metadatas=[{"source": "gone.md"}])
    embeddings = FakeEmbeddings(size=16)
    report = run_ingest(config, docs_copy, progress=False, embeddings=embeddings)
    assert report.updated == ["faq.html"] and report.deleted == ["gone.md"]
    assert embeddings.embedded == report.chunks_written == 2 and report.chunks_deleted == 1
    assert chunks_of(config) == stored
    assert len(ingest(config, docs_copy).unchanged) == EXAMPLE_FILES


def _legacy_record(config, collection, record_id):
    """The files table as an old version kept it, in a local SQLite file beside the lock."""
    from ingest.index import legacy_record_path, read_files

    rows = read_files(config)
    path = legacy_record_path(config)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE rag_bot_files (source TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                     "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL)")
        conn.execute("CREATE TABLE rag_bot_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.executemany("INSERT INTO rag_bot_files VALUES (?, ?, ?, ?, ?)",
                         [(r.source, r.size, r.mtime_ns, r.sha256, r.chunks) for r in rows.values()])
        conn.executemany("INSERT INTO rag_bot_meta VALUES (?, ?)", [("record_id", "r1"), ("root", "/x")])
    conn.close()
    open_client(config).delete_collection(collection.name + ".rag_bot_files")
    update_metadata(collection, {"rag_bot.record": record_id})
    return path


def test_an_old_local_record_moves_into_the_store_once(config, docs_copy):
    from ingest.index import read_files

    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    path = _legacy_record(config, collection, "r1")
    assert len(read_files(config)) == EXAMPLE_FILES  # dry runs and stats read it too
    embeddings = FakeEmbeddings(size=16)
    report = run_ingest(config, docs_copy, progress=False, embeddings=embeddings)
    # an old record predates reader versions: the files whose reader changed since (PDF, Markdown, HTML) are
    # read again; their chunks are the ones already stored, so nothing is embedded
    changed = sorted(p.name for p in docs_copy.iterdir() if loaders.reader_version(p.name) > 1)
    assert "how-retrieval-works.pdf" in changed and "getting-started.md" in changed
    assert report.updated == changed and len(report.unchanged) == EXAMPLE_FILES - len(changed)
    assert embeddings.embedded == 0
    assert not path.exists() and path.with_name(path.name + ".moved-to-store").exists()
    assert "rag_bot.record" not in fresh_metadata(collection)
    # A local record of some other collection's keeper is never taken for this one's.
    other = _legacy_record(config, collection, "someone-else")
    assert read_files(config) == {}
    assert len(ingest(config, docs_copy).added) == EXAMPLE_FILES and other.exists()


def test_a_keyword_index_built_from_another_version_is_rebuilt(tmp_path, docs_copy):
    """Another data_dir changed the shared collection without changing its size: the first data_dir's
    BM25 index is out of date by version stamp alone, and is rebuilt."""
    from rag_bot.bm25 import Bm25Index, bm25_path, load_bm25

    first, second = shared_store(tmp_path, "a"), shared_store(tmp_path, "b")
    ingest(first, docs_copy)
    built = Bm25Index.load(bm25_path(first))
    collection = get_collection(open_client(first), "rag_bot")
    assert built.version == fresh_metadata(collection)[META_VERSION]
    text = (docs_copy / "ingesting.md").read_text()
    (docs_copy / "ingesting.md").write_text(text.replace("the", "zyxwords", 1))
    report = ingest(second, docs_copy)
    assert report.updated == ["ingesting.md"] and report.chunks_total == len(built.ids)
    assert Bm25Index.load(bm25_path(first)).version == built.version  # untouched until read
    fresh = load_bm25(first, collection)
    assert fresh.version == fresh_metadata(collection)[META_VERSION] != built.version
    assert fresh.search("zyxwords", 3)
