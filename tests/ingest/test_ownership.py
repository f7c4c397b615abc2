"""One collection, one folder, one record, one ingest at a time: kept in the store, so that two
data_dirs (two configs, two machines) on one store cannot delete each other's chunks."""

import time

import pytest

from ingest.ownership import Lease, StoreLease
from ingest.pipeline import run_ingest
from rag_bot.errors import StoreError
from rag_bot.store import META_LEASE, META_VERSION, fresh_metadata, get_collection, open_client, update_metadata
from tests.conftest import FakeEmbeddings, make_config


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
    assert len(again.unchanged) == 6 and again.chunks_total == len(stored) and again.chunks_deleted == 0


def test_a_second_record_for_the_same_folder_is_refused_until_it_takes_over(tmp_path, docs_copy):
    first, second = shared_store(tmp_path, "a"), shared_store(tmp_path, "b")
    ingest(first, docs_copy)
    stored = chunks_of(first)
    with pytest.raises(StoreError, match=r"is kept by another ingest record \(.*a/data/records/.*--rebuild"):
        ingest(second, docs_copy)
    assert chunks_of(first) == stored
    ingest(second, docs_copy, rebuild=True)  # taking over is explicit, and re-embeds everything
    assert chunks_of(second) == stored
    with pytest.raises(StoreError, match=r"kept by another ingest record \(.*b/data/records/"):
        ingest(first, docs_copy)


def test_a_running_ingest_elsewhere_is_refused_and_an_expired_lease_is_taken_over(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    running = Lease("t0k3n", time.time() + 60, "otherhost pid 7 record 0123")
    update_metadata(collection, {META_LEASE: running.to_value()})
    with pytest.raises(StoreError, match=r"another ingest into collection 'rag_bot' is running \(otherhost pid 7"):
        ingest(config, docs_copy)
    update_metadata(collection, {META_LEASE: Lease("t0k3n", time.time() - 1, running.holder).to_value()})
    assert len(ingest(config, docs_copy).unchanged) == 6
    assert fresh_metadata(collection)[META_LEASE] == ""  # given back at the end


def test_our_own_killed_run_does_not_block_the_next_one(tmp_path, config, docs_copy):
    ingest(config, docs_copy)
    collection = get_collection(open_client(config), "rag_bot")
    record_id = fresh_metadata(collection)["rag_bot.record"]
    dead = Lease("d34d", time.time() + 500, f"thishost pid 1 record {record_id}")
    update_metadata(collection, {META_LEASE: dead.to_value()})
    assert len(ingest(config, docs_copy).unchanged) == 6


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
    with pytest.raises(StoreError, match=r"^chunking.size/chunking.overlap: collection 'rag_bot' was chunked with "
                                         r"size 40, overlap 8, but the config says size 60, overlap 8; .*--rebuild"):
        ingest(other, docs_copy)
    with pytest.raises(StoreError, match="was chunked with"):
        ingest(other, docs_copy, dry_run=True)
    assert len(ingest(other, docs_copy, rebuild=True).added) == 6


def test_a_deleted_record_is_replaced_in_place_without_a_refusal(config, docs_copy):
    """The record at the same host:path was deleted (say `rm -r data_dir/records`): nobody else can be
    keeping the collection, so the next run re-indexes the folder instead of refusing."""
    from ingest.index import record_path

    ingest(config, docs_copy)
    stored = chunks_of(config)
    record_path(config).unlink()
    report = ingest(config, docs_copy)
    assert len(report.added) == 6 and report.chunks_deleted == 0 and chunks_of(config) == stored
