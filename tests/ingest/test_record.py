"""The ingest record kept in the store: LangChain's record-manager contract over a real Chroma
collection, and the files table beside it."""

import pytest
from langchain_core.documents import Document
from langchain_core.indexing import index

from ingest.record import FileRow, StoreFiles, StoreRecordManager, files_name, stored_rows
from rag_bot.store import get_collection, open_client, open_vectorstore
from tests.conftest import FakeEmbeddings, make_config


@pytest.fixture
def store(tmp_path):
    config = make_config(tmp_path, embedding={"model": "fake"})
    client = open_client(config)
    vectorstore = open_vectorstore(config, FakeEmbeddings(size=8), client)
    return client, vectorstore, get_collection(client, config.store.collection)


def docs(source, *texts):
    return [Document(page_content=text, metadata={"source": source, "chunk_index": i}) for i, text in enumerate(texts)]


def test_the_record_is_the_chunks_in_the_store(store):
    client, vectorstore, collection = store
    manager = StoreRecordManager(collection)
    first = index(docs("a.md", "one", "two") + docs("b.md", "three"), manager, vectorstore,
                  cleanup="scoped_full", source_id_key="source", key_encoder="sha256")
    assert first["num_added"] == 3
    ids = collection.get(include=[])["ids"]
    assert manager.exists([*ids, "missing"]) == [True, True, True, False]
    assert sorted(manager.list_keys()) == sorted(ids) and len(manager.list_keys(limit=2)) == 2
    assert len(manager.list_keys(group_ids=["a.md"])) == 2

    # A new run (a new manager, as every ingest makes): a.md changed its second chunk.
    manager = StoreRecordManager(collection)
    start = manager.get_time()
    assert manager.list_keys(before=start, group_ids=["a.md"]) == manager.list_keys(group_ids=["a.md"])
    again = index(docs("a.md", "one", "TWO"), manager, vectorstore,
                  cleanup="scoped_full", source_id_key="source", key_encoder="sha256")
    assert again == {"num_added": 1, "num_updated": 0, "num_skipped": 1, "num_deleted": 1}
    assert len(manager.list_keys(after=start)) == 2  # written or seen in this run
    assert manager.chunk_counts() == {"a.md": 2, "b.md": 1}
    assert collection.count() == 3
    manager.delete_keys(manager.ids_of("b.md"))
    assert manager.chunk_counts() == {"a.md": 2}
    with pytest.raises(ValueError, match="2 keys but 1 group ids"):
        manager.update(["x", "y"], group_ids=["a.md"])


def test_the_files_table_belongs_to_one_collection(store, tmp_path):
    client, _, collection = store
    table = StoreFiles(client, collection)
    assert table.created and table.name == "rag_bot.rag_bot_files"
    row = FileRow("x\\xff.md", 12, 1_795_448_851_155_164_536, "ab" * 32, 3)
    table.save([row, FileRow("b.md", 1, 2, "cd", 0)])
    table.forget(["b.md"])
    assert StoreFiles(client, collection).rows() == {"x\\xff.md": row}
    assert stored_rows(client, collection) == {"x\\xff.md": row}
    # The collection is made anew (deleted by hand, or by another tool): its files table starts empty.
    client.delete_collection(collection.name)
    config = make_config(tmp_path, embedding={"model": "fake"})
    open_vectorstore(config, FakeEmbeddings(size=8), client)
    remade = get_collection(client, config.store.collection)
    assert stored_rows(client, remade) is None
    fresh = StoreFiles(client, remade)
    assert fresh.created and fresh.rows() == {} and files_name(remade.name) == fresh.name
