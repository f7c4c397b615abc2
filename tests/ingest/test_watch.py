"""`ingest --watch`: a watched folder's collection converges to what a clean ingest of the final
folder gives, run by run; in process with fake embeddings, and through the CLI with the real model."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ingest.watch import watch_folder
from rag_bot.errors import StoreError
from rag_bot.store import get_collection, reopen_client
from tests.conftest import EXAMPLE_DOCS, RAG_BOT, FakeEmbeddings, make_config


def stored(config) -> tuple[list[str], list[tuple[str, int]]]:
    collection = get_collection(reopen_client(config), config.store.collection)
    got = collection.get(include=["metadatas"])
    return sorted(got["ids"]), sorted((m["source"], m["chunk_index"]) for m in got["metadatas"])


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the watched collection did not converge in time")
        time.sleep(0.1)


def test_watched_folder_converges_to_a_clean_ingest(tmp_path: Path):
    from ingest.pipeline import run_ingest

    folder = tmp_path / "docs"
    shutil.copytree(EXAMPLE_DOCS, folder)
    config = make_config(tmp_path, embedding={"model": "fake"}, chunking={"size": 40, "overlap": 8})
    reports, errors, stop = [], [], threading.Event()
    embeddings = FakeEmbeddings(size=16)
    watcher = threading.Thread(target=watch_folder, args=(config, folder), kwargs=dict(
        embeddings=embeddings, on_report=reports.append, on_error=errors.append, stop=stop, debounce_ms=200))
    watcher.start()
    try:
        wait_for(lambda: len(reports) == 1)
        assert len(reports[0].added) == len(list(EXAMPLE_DOCS.iterdir()))
        (folder / "new-topic.md").write_text("# Gardening\n\nTomatoes need six hours of sun a day.\n" * 5)
        (folder / "faq.html").unlink()
        changed = folder / "getting-started.md"
        changed.write_text(changed.read_text() + "\n## Later\n\nA paragraph added while watching.\n")
        (folder / "sub").mkdir()
        (folder / "sub" / "deep.txt").write_text("A file in a new sub-folder, written after the watch began.\n")
        wait_for(lambda: sum(len(r.added) for r in reports[1:]) == 2 and sum(len(r.deleted) for r in reports[1:]) == 1
                 and sum(len(r.updated) for r in reports[1:]) == 1)
        time.sleep(0.5)  # nothing more is coming
        runs = len(reports)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive() and errors == []
    assert 2 <= runs <= 4  # the burst of four changes is one or a few runs, not one per event

    clean = config.for_collection("clean")
    run_ingest(clean, folder, progress=False, embeddings=embeddings)
    assert stored(config) == stored(clean)
    assert ("sub/deep.txt", 0) in stored(config)[1] and not any(s == "faq.html" for s, _ in stored(config)[1])


def test_writes_inside_the_data_folder_start_no_run(tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nSome text about apples and pears.\n")
    config = make_config(folder, embedding={"model": "fake"})  # data_dir inside the watched folder
    reports, stop = [], threading.Event()
    watcher = threading.Thread(target=watch_folder, args=(config, folder), kwargs=dict(
        embeddings=FakeEmbeddings(size=16), on_report=reports.append, on_error=print, stop=stop, debounce_ms=200))
    watcher.start()
    try:
        wait_for(lambda: len(reports) == 1)
        time.sleep(2.0)  # the store's own writes settle; none of them may start a run
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert len(reports) == 1 and reports[0].added == ["a.md"]


def test_a_failed_run_is_reported_and_the_watch_goes_on(tmp_path: Path, monkeypatch):
    import ingest.watch as watch_module

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nText.\n")
    calls = []

    def flaky(config, root, **kwargs):
        calls.append(root)
        if len(calls) == 1:
            raise StoreError("store.host/store.port: the Chroma server stopped answering")
        return "report"

    monkeypatch.setattr(watch_module, "run_ingest", flaky)
    reports, errors, stop = [], [], threading.Event()
    watcher = threading.Thread(target=watch_folder, args=(make_config(tmp_path, embedding={"model": "fake"}), folder),
                               kwargs=dict(embeddings=None, on_report=reports.append, on_error=errors.append,
                                           stop=stop, debounce_ms=100))
    watcher.start()
    try:
        wait_for(lambda: len(errors) == 1)
        (folder / "b.md").write_text("# B\n\nMore.\n")
        wait_for(lambda: reports == ["report"])
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert "stopped answering" in str(errors[0])


def test_ctrl_c_in_the_middle_of_a_run_stops_the_watch_quietly(tmp_path: Path, monkeypatch):
    import ingest.watch as watch_module

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nText.\n")

    def interrupted(config, root, **kwargs):
        raise KeyboardInterrupt  # what SIGINT raises on the main thread while a run embeds

    monkeypatch.setattr(watch_module, "run_ingest", interrupted)
    reports: list = []
    # returns instead of raising (the CLI then says "stopped watching" and exits 0, as between runs)
    watch_folder(make_config(tmp_path, embedding={"model": "fake"}), folder, embeddings=None,
                 on_report=reports.append, on_error=reports.append, debounce_ms=100)
    assert reports == []


@pytest.mark.slow
def test_cli_watch_prints_each_run_and_stops_on_ctrl_c(tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Apples\n\nApples grow on trees in orchards.\n")
    config = tmp_path / "config.yaml"
    config.write_text("data_dir: data\nreranker: {enabled: false}\n")
    watcher = subprocess.Popen([RAG_BOT, "--config", str(config), "ingest", str(folder), "--watch", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watcher.stdout], daemon=True).start()
    said: list[str] = []  # stderr read as it comes: a full pipe would hold the process up at its exit
    threading.Thread(target=lambda: said.extend(watcher.stderr), daemon=True).start()

    def next_run() -> dict:
        try:
            return json.loads(lines.get(timeout=120))
        except queue.Empty:
            raise AssertionError("no ingest run reported within 120 s of the change") from None

    try:
        first = next_run()
        assert first["files"]["added"] == 1
        (folder / "b.md").write_text("# Pears\n\nPears ripen after they are picked.\n")
        second = next_run()
        assert second["files"] == {"added": 1, "updated": 0, "deleted": 0, "unchanged": 1, "skipped": 0}
        (folder / "a.md").unlink()
        third = next_run()
        assert third["files"]["deleted"] == 1 and third["chunks"]["total"] == 1
        watcher.send_signal(signal.SIGINT)
        try:  # (it stops in a second or two; a loaded CI machine once took over 30 s)
            assert watcher.wait(timeout=120) == 0
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 120 s after Ctrl+C; it said: {''.join(said)[-2000:]}") from None
        deadline = time.monotonic() + 10
        while "stopped watching" not in "".join(said) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "stopped watching" in "".join(said)
    finally:
        watcher.kill()


def test_a_slow_copy_of_many_files_is_one_run(tmp_path: Path):
    """Issue 34, defect 8: a run started after 50 ms of quiet, so a 3 s copy of 30 files gave 6 runs
    (each retraining a corpus filter). A burst ends after a second of quiet (DEBOUNCE_MS)."""
    from ingest.watch import DEBOUNCE_MS

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "first.md").write_text("# First\n\nThe first file.\n")
    config = make_config(tmp_path, embedding={"model": "fake"})
    reports: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_folder, args=(config, folder), kwargs=dict(
        embeddings=FakeEmbeddings(size=16), on_report=reports.append, on_error=print, stop=stop))
    watcher.start()
    try:
        wait_for(lambda: len(reports) == 1)
        for i in range(30):  # 3 s, a file every 0.1 s: like a slow copy
            (folder / f"copied-{i:02d}.md").write_text(f"# Copied {i}\n\nFile number {i} of the copy.\n")
            time.sleep(0.1)
        wait_for(lambda: sum(len(r.added) for r in reports[1:]) == 30)
        time.sleep(DEBOUNCE_MS / 1000 + 0.5)
        assert len(reports) == 2, [len(r.added) for r in reports]
    finally:
        stop.set()
        watcher.join(timeout=30)
