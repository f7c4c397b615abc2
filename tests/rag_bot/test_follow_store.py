"""A long-lived retriever (the chat server) stays in step with ingests run by another process:
added files are found, a rebuild is followed, a collection being rebuilt is a clear message."""

import subprocess
import sys

import pytest

from ingest.pipeline import run_ingest
from rag_bot import StoreError, load_retriever
from tests.conftest import ROOT, FakeEmbeddings, make_config

SETTINGS = dict(embedding={"model": "fake"}, chunking={"size": 40, "overlap": 8},
                filter={"enabled": False}, reranker={"enabled": False})
# The same config and fake model in another process, as `rag-bot ingest` would run beside the server.
ELSEWHERE = """
import sys
from pathlib import Path
from ingest.pipeline import run_ingest
from rag_bot.store import open_client
from tests.conftest import FakeEmbeddings, make_config
config = make_config(Path(sys.argv[1]), **{settings!r})
if sys.argv[2] == "delete":
    open_client(config).delete_collection(config.store.collection)
else:
    run_ingest(config, sys.argv[2], rebuild=sys.argv[3] == "rebuild", progress=False, embeddings=FakeEmbeddings(size=16))
""".format(settings=SETTINGS)


def elsewhere(tmp_path, *args):
    subprocess.run([sys.executable, "-c", ELSEWHERE, str(tmp_path), *args, ""], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)


def found(retriever, text, source):
    return [d.metadata["source"] for d in retriever.search(text, sources=source).documents]


def test_a_running_retriever_follows_ingests_from_another_process(tmp_path, docs_copy, monkeypatch):
    monkeypatch.setattr("rag_bot.live.FOLLOW_SECONDS", 0.0)
    config = make_config(tmp_path, **SETTINGS)
    run_ingest(config, docs_copy, progress=False, embeddings=FakeEmbeddings(size=16))
    retriever = load_retriever(config, embeddings=FakeEmbeddings(size=16))
    text = "Release notes: version 0.1 adds incremental ingest."
    assert found(retriever, text, "new-notes.txt") == []
    (docs_copy / "new-notes.txt").write_text(text + "\n")
    elsewhere(tmp_path, str(docs_copy))
    assert found(retriever, text, "new-notes.txt") == ["new-notes.txt"]  # no restart
    new_ids = retriever.collection.get(where={"source": "new-notes.txt"})["ids"]
    assert retriever.bm25.search("release notes incremental", 1)[0][0] in new_ids  # keyword index too
    elsewhere(tmp_path, str(docs_copy), "rebuild")
    assert found(retriever, text, "new-notes.txt") == ["new-notes.txt"]  # the re-created collection
    assert retriever.search("How do I ingest a folder?").documents
    elsewhere(tmp_path, "delete")
    with pytest.raises(StoreError, match=r"^store.collection: 'rag_bot' is being rebuilt .*try again in a moment"):
        retriever.search("How do I ingest a folder?")
    elsewhere(tmp_path, str(docs_copy))
    assert found(retriever, text, "new-notes.txt") == ["new-notes.txt"]
