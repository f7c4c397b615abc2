"""`rag-bot mcp` for real: the example docs' store, the packaged models, and the official `mcp` SDK's
own client driving the server over stdio (a subprocess it launches) and over streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import EXAMPLE_DOCS, RAG_BOT, free_port, wait_until_ready

pytestmark = pytest.mark.slow

EXAMPLE_NAMES = {path.name for path in EXAMPLE_DOCS.iterdir()}
KEY = "mcp-test-key-123"


def stdio(config: Path) -> StdioServerParameters:
    env = {key: value for key, value in os.environ.items() if key != "RAG_BOT_API_KEY"}
    return StdioServerParameters(command=RAG_BOT, args=["--config", str(config), "mcp"], env=env)


def test_tools_resources_and_answers_over_stdio(chat_config_file):
    async def session() -> None:
        async with Client(stdio(chat_config_file), read_timeout_seconds=600) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {"search", "ask", "list_collections"}
            assert set(tools["search"].input_schema["properties"]) == {"query", "k", "collection", "source"}

            listed = (await client.call_tool("list_collections", {})).structured_content
            assert listed["default"] == "rag_bot"
            assert {"name": "rag_bot", "documents": len(EXAMPLE_NAMES)} in listed["collections"]

            found = await client.call_tool("search", {"query": "How do I ingest a folder of documents?", "k": 3})
            assert not found.is_error
            results = found.structured_content["results"]
            assert len(results) == 3 and not found.structured_content["declined"]
            assert all(row["source"] in EXAMPLE_NAMES and row["text"] for row in results)
            only_pdf = await client.call_tool("search", {"query": "reranking", "source": "*.pdf"})
            assert {row["source"] for row in only_pdf.structured_content["results"]} == {"how-retrieval-works.pdf"}

            resources = {str(item.uri): item for item in (await client.list_resources()).resources}
            assert {f"rag-bot://rag_bot/{name}" for name in EXAMPLE_NAMES} <= set(resources)
            guide = (await client.read_resource("rag-bot://rag_bot/getting-started.md")).contents[0]
            assert guide.text == (EXAMPLE_DOCS / "getting-started.md").read_text(encoding="utf-8").strip()
            pdf = (await client.read_resource("rag-bot://rag_bot/how-retrieval-works.pdf")).contents[0]
            assert pdf.text.startswith("[page 1]\n") and "[page 2]" in pdf.text

            declined = await client.call_tool("ask", {"question": "what is the best pizza topping?"})
            assert not declined.is_error  # a declined question is a normal result that says so
            assert declined.structured_content["declined"] is True and declined.structured_content["reason"]
            assert declined.structured_content["abstained"] is False

            answered = await client.call_tool("ask", {"question": "Where does rag-bot keep its data?"})
            reply = answered.structured_content
            assert not answered.is_error and reply["declined"] is False and reply["sources"]
            assert reply["answer"] and answered.content[0].text.startswith(reply["answer"].split("\n")[0][:40])

            unknown = await client.call_tool("search", {"query": "ingest", "collection": "nope"})
            assert unknown.is_error and "no collection named 'nope'" in unknown.content[0].text

    asyncio.run(session())


def test_a_follow_up_question_is_rewritten_from_the_history(chat_config_file):
    history = [{"role": "user", "content": "What does the reranker do?"},
               {"role": "assistant", "content": "The reranker reorders the retrieved passages with a cross-encoder [1]."}]

    async def session() -> dict:
        async with Client(stdio(chat_config_file), read_timeout_seconds=600) as client:
            result = await client.call_tool("ask", {"question": "How do I turn it off?", "history": history})
            assert not result.is_error
            return result.structured_content

    reply = asyncio.run(session())
    assert reply["rewritten"] is True and "rerank" in reply["searched_for"].lower()


def test_documents_outside_the_collection_are_not_read(chat_config_file):
    async def session() -> None:
        async with Client(stdio(chat_config_file), read_timeout_seconds=600) as client:
            for uri in ("rag-bot://rag_bot/../config.yaml", "rag-bot://rag_bot/%2E%2E/config.yaml",
                        "rag-bot://rag_bot//etc/passwd", "rag-bot://rag_bot/not-ingested.md",
                        "rag-bot://other/getting-started.md"):
                with pytest.raises(Exception) as refused:
                    await client.read_resource(uri)
                assert "root:" not in str(refused.value) and "data_dir" not in str(refused.value)

    asyncio.run(session())


def start_http(config: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`rag-bot mcp --port` on a free loopback port; returns once the port answers."""
    port = free_port()
    server = subprocess.Popen([RAG_BOT, "--config", str(config), "mcp", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/mcp"

    def listening() -> bool:
        try:
            urllib.request.urlopen(url, timeout=2)
        except urllib.error.HTTPError:  # any HTTP answer: it listens
            return True
        except OSError:
            return False
        return True

    wait_until_ready(server, listening, "rag-bot mcp")
    return server, url


def test_streamable_http_needs_the_key(chat_config_file):
    server, url = start_http(chat_config_file, {**os.environ, "RAG_BOT_API_KEY": KEY})
    try:
        request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401

        async def session() -> None:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=600)
            async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=600) as client:
                found = await client.call_tool("search", {"query": "How do I ingest a folder?", "k": 2})
                assert [row["source"] in EXAMPLE_NAMES for row in found.structured_content["results"]] == [True, True]
                declined = await client.call_tool("ask", {"question": "what is the best pizza topping?"})
                assert declined.structured_content["declined"] is True

        asyncio.run(session())
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_http_beyond_loopback_without_a_key_is_refused(chat_config_file):
    env = {key: value for key, value in os.environ.items() if key != "RAG_BOT_API_KEY"}
    done = subprocess.run([RAG_BOT, "--config", str(chat_config_file), "mcp", "--host", "0.0.0.0", "--port", "8799"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: api.host: 0.0.0.0 is reachable from other machines; set api.key")
