"""Issue 34's attacks, measured: what one client's page costs while others fail to log in, what a
DOCX decompression bomb costs an ingest, and how `rag-bot serve`'s memory grows with collections.

- login: the chat UI with `ui.auth` on 127.0.0.1; another client loads the page while N wrong
  logins run in parallel (N = 0, 1, 3, 45); page load p50/max per N.
- docx bomb: a 59 KB DOCX whose word/document.xml is 40 MB of empty paragraphs, ingested beside a
  normal DOCX with the packaged embedding model; seconds and peak memory of the run.
- serve memory: the example documents ingested into four collections, `rag-bot serve` asked one
  question per collection; the server's resident memory after each.

Run from the checkout; with PYTHONPATH set to an older checkout it measures that code instead.
Writes bench/results/hardening.json (or --out).

    .venv/bin/python bench/hardening.py [--parts login,docx,serve] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scifact import ROOT, cpu_flags, machine

RAG_BOT = str(Path(sys.executable).parent / "rag-bot")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def login_part(counts: list[int]) -> dict:
    from rag_bot.config import UIConfig
    from rag_bot.ui import build_app, launch

    app = build_app(lambda: None)
    port = free_port()
    launch(app, UIConfig(port=port, auth="alice:s3cret"), block=False)
    base = f"http://127.0.0.1:{port}"

    def page() -> float:
        started = time.monotonic()
        try:
            urllib.request.urlopen(f"{base}/", timeout=120).close()
        except OSError:
            return 120.0
        return time.monotonic() - started

    def wrong(i: int) -> int:
        form = urllib.parse.urlencode({"username": "alice", "password": f"guess{i}"}).encode()
        try:
            return urllib.request.urlopen(f"{base}/login", data=form, timeout=300).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    rows = []
    try:
        page()
        for parallel in counts:
            time.sleep(9)  # the throttle's longest wait passes: each row starts afresh
            with ThreadPoolExecutor(max_workers=max(parallel, 1) + 1) as pool:
                attempts = [pool.submit(wrong, i) for i in range(parallel)]
                times = [page() for _ in range(5)]
                statuses = [attempt.result() for attempt in attempts]
            rows.append({"wrong_logins": parallel, "page_p50_s": round(statistics.median(times), 3),
                         "page_max_s": round(max(times), 3),
                         "login_statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))}})
            print(f"login: {parallel:>2} wrong logins at once: another client's page p50 {rows[-1]['page_p50_s']} s, "
                  f"max {rows[-1]['page_max_s']} s; logins answered {rows[-1]['login_statuses']}", flush=True)
    finally:
        app.close()
    return {"rows": rows}


def docx_bomb(paragraphs: int) -> bytes:
    import docx

    buffer = io.BytesIO()
    docx.Document().save(buffer)
    packed = io.BytesIO()
    with zipfile.ZipFile(buffer) as original, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as bomb:
        for member in original.infolist():
            data = original.read(member)
            if member.filename == "word/document.xml":
                head = data.decode().partition("<w:body>")[0]
                data = (head + "<w:body>" + "<w:p/>" * paragraphs + "</w:body></w:document>").encode()
            bomb.writestr(member, data, zipfile.ZIP_DEFLATED)
    return packed.getvalue()


def docx_part() -> dict:
    """In a child process, so that its peak memory is the ingest's alone."""
    code = """
import io, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import docx
from hardening import docx_bomb
from ingest.pipeline import run_ingest
from rag_bot.config import Config
root = Path(sys.argv[1])
folder = root / "docs"
folder.mkdir()
(folder / "bomb.docx").write_bytes(docx_bomb(40 * 1024 * 1024 // 6))
document = docx.Document()
for i in range(200):
    document.add_paragraph(f"Paragraph {i} of a normal report about the project and its documents.")
document.save(str(folder / "normal.docx"))
config = Config.model_validate({"data_dir": str(root / "data"), "reranker": {"enabled": False}}).resolved(root)
started = time.monotonic()
report = run_ingest(config, folder, progress=False)
print(json.dumps({"bomb_kb": round((folder / "bomb.docx").stat().st_size / 1024, 1),
                  "seconds": round(time.monotonic() - started, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "added": report.added, "skipped": {s.source: s.reason for s in report.skipped}}))
"""
    with tempfile.TemporaryDirectory() as root:
        done = subprocess.run([sys.executable, "-c", code, root, str(ROOT / "bench")], capture_output=True, text=True,
                              timeout=3600)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"docx bomb: {result['bomb_kb']} KB file; ingest with a normal DOCX took {result['seconds']} s, peak "
          f"{result['peak_rss_mb']} MB; added {result['added']}; skipped {result['skipped']}", flush=True)
    return result


def rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 1e6)


def serve_part() -> dict:
    import openai

    with tempfile.TemporaryDirectory() as root:
        config = Path(root) / "config.yaml"
        config.write_text("data_dir: data\nreranker: {enabled: false}\n", encoding="utf-8")
        names = ["rag_bot", "second", "third", "fourth"]
        for name in names:
            subprocess.run([RAG_BOT, "--config", str(config), "ingest", str(ROOT / "examples" / "docs"), "--no-progress",
                            "--collection", name], check=True, capture_output=True)
        subprocess.run([RAG_BOT, "--config", str(config), "train-filter", "--from-corpus"], check=True,
                       capture_output=True)
        port = free_port()
        server = subprocess.Popen([RAG_BOT, "--config", str(config), "serve", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.5)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
            rows = [{"asked": 0, "rss_mb": rss_mb(server.pid)}]
            for i, name in enumerate(names, 1):
                client.chat.completions.create(model=name, messages=[
                    {"role": "user", "content": "What is maximal marginal relevance?"}])
                rows.append({"asked": i, "rss_mb": rss_mb(server.pid)})
                print(f"serve: {i} collections asked: {rows[-1]['rss_mb']} MB resident", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="login,docx,serve")
    parser.add_argument("--logins", default="0,1,3,45", help="wrong logins at once, per row (default: 0,1,3,45)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hardening.json"))
    args = parser.parse_args()
    import rag_bot

    results = {"machine": machine(), "cpu_flags": cpu_flags(), "code": str(Path(rag_bot.__file__).parent.parent)}
    counts = [int(n) for n in args.logins.split(",")]
    parts = {"login": lambda: login_part(counts), "docx": docx_part, "serve": serve_part}
    for part in args.parts.split(","):
        results[part] = parts[part]()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
