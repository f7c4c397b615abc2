"""`rag-bot serve` for real: the packaged MiniLM, a Chroma store, the packaged GGUF, a server on
127.0.0.1 started here, and the official `openai` client."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests.conftest import EXAMPLE_DOCS, RAG_BOT, free_port, wait_until_ready

pytestmark = pytest.mark.slow

EXAMPLE_NAMES = {path.name for path in EXAMPLE_DOCS.iterdir()}
NOTES = "The lighthouse on Karrow Point was built in 1911 by the engineer Maud Ellery.\n"


def start_server(config: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`rag-bot serve` on a free loopback port; returns once /health answers."""
    port = free_port()
    server = subprocess.Popen([RAG_BOT, "--config", str(config), "serve", "--port", str(port), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as reply:
                return json.load(reply)["status"] == "ok"
        except OSError:
            return False

    wait_until_ready(server, healthy, "rag-bot serve")
    return server, base


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def api(chat_config_file, tmp_path_factory) -> Iterator[str]:
    """The example docs' chat config served, plus a second collection `notes` from a folder of its own."""
    notes = tmp_path_factory.mktemp("notes")
    (notes / "lighthouse.md").write_text("# Karrow Point\n\n" + NOTES, encoding="utf-8")
    subprocess.run([RAG_BOT, "--config", str(chat_config_file), "ingest", str(notes), "--collection", "notes",
                    "--no-progress"], check=True, capture_output=True, timeout=300)
    server, base = start_server(chat_config_file)
    try:
        yield base
    finally:
        stop(server)


def client(base: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)


def test_answer_with_citations_through_the_openai_client(api):
    reply = client(api).chat.completions.create(
        model="rag_bot", messages=[{"role": "user", "content": "Where does rag-bot keep its data?"}])
    text = reply.choices[0].message.content
    extra = reply.model_extra["rag_bot"]
    assert extra["declined"] is False and extra["sources"] and extra["evidence"]
    assert {"n", "source", "page", "heading", "snippet", "rerank_score", "scope_score"} <= set(extra["sources"][0])
    assert {source["source"] for source in extra["sources"]} <= EXAMPLE_NAMES
    assert ".rag_bot" in text  # the answer, or its evidence quote, names the folder
    assert "\nSources:\n[1] " in text and extra["sources"][0]["source"] in text
    assert f'[{extra["evidence"][0]["n"]}] "' in text or "The documents say:" in text


def test_streamed_answer_and_the_extra_field_at_the_end(api):
    chunks = list(client(api).chat.completions.create(
        model="rag_bot", stream=True, messages=[{"role": "user", "content": "Which file formats can I ingest?"}]))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert "\nSources:\n[1] " in text and "ingesting.md" in text
    assert len(chunks) > 4 and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["rag_bot"]["sources"][0]["source"] in EXAMPLE_NAMES


def test_off_topic_question_is_declined_as_a_normal_completion(api):
    reply = client(api).chat.completions.create(
        model="rag_bot", messages=[{"role": "user", "content": "what is the best pizza topping?"}])
    extra = reply.model_extra["rag_bot"]
    assert extra["declined"] is True and extra["reason"] == "out_of_scope" and extra["sources"] == []
    assert "seems to be about something else" in reply.choices[0].message.content
    assert extra["scope"]["score"] < extra["scope"]["threshold"]


def test_collections_are_models_and_each_answers_from_its_own_folder(api):
    openai_client = client(api)
    assert [model.id for model in openai_client.models.list()] == ["rag_bot", "notes"]
    reply = openai_client.chat.completions.create(
        model="notes", messages=[{"role": "user", "content": "Who built the lighthouse on Karrow Point?"}])
    extra = reply.model_extra["rag_bot"]
    assert [source["source"] for source in extra["sources"]] == ["lighthouse.md"]
    assert "Maud Ellery" in reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError, match="no collection named 'gpt-4o'"):
        openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_a_running_server_sees_a_new_ingest_without_a_restart(api, chat_config_file, tmp_path):
    openai_client = client(api)
    first = openai_client.chat.completions.create(
        model="notes", messages=[{"role": "user", "content": "When was the lighthouse on Karrow Point built?"}])
    assert [source["source"] for source in first.model_extra["rag_bot"]["sources"]] == ["lighthouse.md"]
    folder = Path(json.loads(subprocess.run([RAG_BOT, "--config", str(chat_config_file), "stats", "--collection",
                                             "notes", "--json"], capture_output=True, text=True, check=True,
                                            timeout=120).stdout)["folder"])
    (folder / "ferry.md").write_text("# Ferry\n\nThe ferry to Karrow Point leaves the harbour at seven every morning.\n")
    try:
        subprocess.run([RAG_BOT, "--config", str(chat_config_file), "ingest", str(folder), "--collection", "notes",
                        "--no-progress"], check=True, capture_output=True, timeout=300)
        reply = openai_client.chat.completions.create(
            model="notes", messages=[{"role": "user", "content": "When does the ferry to Karrow Point leave?"}])
        assert reply.model_extra["rag_bot"]["sources"][0]["source"] == "ferry.md"
        assert "seven every morning" in reply.choices[0].message.content
    finally:
        (folder / "ferry.md").unlink()
        subprocess.run([RAG_BOT, "--config", str(chat_config_file), "ingest", str(folder), "--collection", "notes",
                        "--no-progress"], check=True, capture_output=True, timeout=300)


def test_retrieve_gives_every_score(api):
    request = urllib.request.Request(api + "/v1/retrieve", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"query": "How do I ingest a folder?", "k": 3}).encode())
    with urllib.request.urlopen(request, timeout=120) as reply:
        body = json.load(reply)
    assert body["model"] == "rag_bot" and len(body["results"]) == 3
    assert body["results"][0]["source"] in EXAMPLE_NAMES and body["results"][0]["candidate_rank"] >= 1
    assert "embed" in body["timings_ms"]


def test_several_clients_at_once_are_all_answered(api):
    questions = ["Where does rag-bot keep its data?", "Which file formats can I ingest?",
                 "what is the best pizza topping?", "How do I ingest a folder?"]

    def ask(question: str) -> dict:
        reply = client(api).chat.completions.create(model="rag_bot", messages=[{"role": "user", "content": question}])
        return reply.model_extra["rag_bot"]

    with ThreadPoolExecutor(len(questions)) as pool:
        results = list(pool.map(ask, questions))
    assert [result["declined"] for result in results] == [False, False, True, False]
    assert all(result["sources"] for result in results if not result["declined"])


def test_key_is_required_and_the_openapi_schema_is_served(chat_config_file):
    server, base = start_server(chat_config_file, env={"RAG_BOT_API_KEY": "test-key-123"})
    try:
        with pytest.raises(openai.AuthenticationError):
            client(base, "wrong-key-000").models.list()
        assert "rag_bot" in [model.id for model in client(base, "test-key-123").models.list()]
        with urllib.request.urlopen(base + "/openapi.json", timeout=10) as reply:
            assert "/v1/chat/completions" in json.load(reply)["paths"]
        for page in ("/docs", "/redoc"):  # no page: Swagger UI and ReDoc would load from a CDN (issue 34)
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(base + page, timeout=10)
    finally:
        stop(server)


def test_serving_beyond_loopback_without_a_key_is_refused(chat_config_file):
    env = {key: value for key, value in os.environ.items() if key != "RAG_BOT_API_KEY"}
    done = subprocess.run([RAG_BOT, "--config", str(chat_config_file), "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: api.host: 0.0.0.0 is reachable from other machines; set api.key")


def test_collections_command_and_collection_option(api, chat_config_file):
    done = subprocess.run([RAG_BOT, "--config", str(chat_config_file), "collections", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    rows = {row["collection"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"rag_bot", "notes"}
    assert rows["notes"]["files"] == 1 and rows["notes"]["chunks"] == 1
    assert rows["rag_bot"]["files"] == len(EXAMPLE_NAMES) and rows["notes"]["folder"].endswith("notes0")
    listing = subprocess.run([RAG_BOT, "--config", str(chat_config_file), "collections"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    assert listing.splitlines()[0].startswith("  notes: 1 files, 1 chunks") and "* rag_bot: " in listing
    found = subprocess.run([RAG_BOT, "--config", str(chat_config_file), "search", "lighthouse builder",
                            "--collection", "notes", "--json"], capture_output=True, text=True, timeout=120, check=True)
    assert [row["source"] for row in json.loads(found.stdout)["results"]] == ["lighthouse.md"]
    bad = subprocess.run([RAG_BOT, "--config", str(chat_config_file), "stats", "--collection", "../x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --collection: '../x': ")
