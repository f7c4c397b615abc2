"""`rag-bot mcp`: the collections as a Model Context Protocol server, for assistants and editors
(Claude Desktop, VS Code, Cursor, Open WebUI), built on the official `mcp` SDK. A thin edge over the
same `Collections` service as the HTTP API: one set of models, one worker that every question goes
through in turn.

- Tools: `search` (passages with file, page, heading and scores), `ask` (the reply of
  `rag-bot ask --json`: answer, evidence, sources, declined or abstained with why) and
  `list_collections`. A question declined or abstained is a normal result that says so.
- Resources: each ingested document as `rag-bot://COLLECTION/PATH`, its text as rag-bot reads it.
- Transports: stdio (what desktop clients launch) by default; streamable HTTP at `/mcp` on
  loopback with a port, where `api.key` (or `$RAG_BOT_API_KEY`) is required as a bearer token when
  set, and listening beyond loopback without a key is refused, as for `rag-bot serve`.

Imported only by `rag-bot mcp` (and tests): the SDK loads with it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Literal
from urllib.parse import quote

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, Resource, TextContent
from pydantic import BaseModel, Field

from . import __version__
from .config import APIConfig
from .errors import RagBotError
from .events import Reply
from .reply import terminal_text
from .service import Busy

if TYPE_CHECKING:
    from .protocols import DocumentShelf
    from .service import Collections

log = logging.getLogger(__name__)

SCHEME = "rag-bot"
PATH = "/mcp"  # where the streamable HTTP transport answers
INSTRUCTIONS = ("Answers from the user's own documents, kept on this machine. Use `ask` for an answer with "
                "citations and evidence (it says plainly when the documents do not cover a question), "
                "`search` for the passages themselves, and read a document as rag-bot://COLLECTION/PATH.")


class Turn(BaseModel):
    """One earlier message of the conversation, for a follow-up question."""

    role: Literal["user", "assistant"]
    content: str


class RagBotMCP(MCPServer):
    """The SDK's server with the collections' documents listed as resources when a client asks."""

    def __init__(self, documents: Callable[[], list[Resource]], **options: Any) -> None:
        super().__init__(**options)
        self._documents = documents

    async def list_resources(self) -> list[Resource]:
        return [*await super().list_resources(), *await asyncio.to_thread(self._documents)]


def build_mcp(service: Collections, shelves: Callable[[str | None], DocumentShelf], api: APIConfig) -> MCPServer:
    """The MCP server over `service`; `shelves(name)` gives a collection's documents; `api` gives the
    size limits of a question and its history."""

    @asynccontextmanager
    async def warm(_: MCPServer) -> AsyncIterator[None]:
        service.warm_up()  # after the transport holds stdout: nothing the models print reaches the wire
        yield

    server = RagBotMCP(lambda: document_resources(service, shelves), name="rag-bot", version=__version__,
                       instructions=INSTRUCTIONS, lifespan=warm, log_level="WARNING")

    @server.tool()
    async def list_collections() -> dict[str, Any]:
        """The collections that can be searched and asked, the default first, each with its documents."""
        names = await _off_loop(service.names)
        counted = await asyncio.gather(*(asyncio.to_thread(_documents_in, shelves, name) for name in names))
        return {"default": service.default,
                "collections": [{"name": name, "documents": count} for name, count in zip(names, counted)]}

    @server.tool()
    async def search(query: str = Field(description="The question or search text."),
                     k: int | None = Field(None, ge=1, le=100, description="Passages to return (default: reranker.top_n)."),
                     collection: str | None = Field(None, description="The collection (default: the configured one)."),
                     source: str | None = Field(None, description="Only files whose path matches this glob, e.g. 'guides/*.md'.")
                     ) -> dict[str, Any]:
        """The passages of the documents closest to `query`, best first, each with its file, page, heading
        and scores; `declined` is true (with the scope check) when the query is off the documents' topics."""
        _check(query, "query", api.max_question_chars)
        name = await _collection(service, collection)

        def found() -> dict[str, Any]:
            retriever = service.retriever(name)
            result = retriever.search(query, k=k, sources=source)
            return {"collection": name, **result.to_json(), "reranker": retriever.reranker_status}

        return await _on_worker(service, found)

    @server.tool()
    async def ask(question: str = Field(description="The question, in the user's words."),
                  history: list[Turn] | None = Field(None, description="The conversation so far, oldest first, "
                                                     "for a follow-up question ('and how do I turn it off?')."),
                  collection: str | None = Field(None, description="The collection (default: the configured one).")
                  ) -> CallToolResult:
        """An answer from the documents with [n] citations, the evidence quotes and the numbered sources.
        When the question is off the documents' topics (`declined`) or the documents do not answer it
        (`abstained`), the reply says so and shows the closest passages instead of an answer."""
        _check(question, "question", api.max_question_chars)
        turns = [turn.model_dump() for turn in history or []]
        if sum(len(turn["content"]) for turn in turns) > api.max_history_chars:
            raise ToolError(f"history: more than {api.max_history_chars} characters (api.max_history_chars); "
                            "send fewer turns")
        name = await _collection(service, collection)

        def answered() -> CallToolResult:
            reply = Reply()
            text = "".join(terminal_text(service.chain(name).stream({"question": question, "history": turns}), reply))
            return CallToolResult(content=[TextContent(type="text", text=text.strip())],
                                  structured_content={"collection": name, **reply.to_json(full=True)})

        return await _on_worker(service, answered)

    @server.resource(f"{SCHEME}://{{collection}}/{{+path}}", name="document", mime_type="text/plain",
                     description="A document of a collection, as text (PDF pages marked [page N]).")
    async def document(collection: str, path: str) -> str:
        names = await _off_loop(service.names)
        if collection not in names:
            raise ResourceError(f"no collection named {collection!r}; the collections are: {', '.join(names)}")
        try:
            return await asyncio.to_thread(shelves(collection).text, path)
        except RagBotError as exc:
            raise ResourceError(str(exc)) from exc

    return server


def document_resources(service: Collections, shelves: Callable[[str | None], DocumentShelf]) -> list[Resource]:
    """Every ingested document of every collection, as a resource a client can read."""
    found = []
    for name in service.names():
        for row in shelves(name).rows():
            found.append(Resource(uri=f"{SCHEME}://{name}/{quote(row['source'])}", name=row["source"],
                                  title=f"{row['source']} ({name})", mime_type="text/plain",
                                  description=f"{row['chunks']} passages in collection {name!r}"))
    return found


def _documents_in(shelves: Callable[[str | None], DocumentShelf], name: str) -> int:
    return len(shelves(name).rows())


def _check(text: str, key: str, limit: int) -> None:
    if not text.strip():
        raise ToolError(f"{key}: empty; send the question's words")
    if len(text) > limit:
        raise ToolError(f"{key}: {len(text)} characters; the limit is {limit} (api.max_question_chars)")


async def _collection(service: Collections, name: str | None) -> str:
    if name is None:
        return service.default
    names = await _off_loop(service.names)
    if name not in names:
        raise ToolError(f"collection: no collection named {name!r}; the collections are: {', '.join(names) or 'none'} "
                        "(ingest a folder with rag-bot ingest DIR --collection NAME)")
    return name


async def _off_loop(work: Callable[[], Any]) -> Any:
    try:
        return await asyncio.to_thread(work)
    except RagBotError as exc:
        raise ToolError(str(exc)) from exc


async def _on_worker(service: Collections, work: Callable[[], Any]) -> Any:
    """`work()` on the service's single worker (after the questions already waiting)."""
    try:
        return await asyncio.wrap_future(service.run(work))
    except Busy as exc:
        raise ToolError(str(exc)) from exc
    except RagBotError as exc:
        raise ToolError(str(exc)) from exc


def serve_stdio(server: MCPServer) -> None:
    """Serve over stdin and stdout until the client closes them."""
    server.run("stdio")


def serve_http(server: MCPServer, api: APIConfig, key: str | None) -> None:
    """Serve streamable HTTP at `http://HOST:PORT/mcp` until interrupted; with `key`, every request
    must carry `Authorization: Bearer KEY`."""
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=PATH, host=api.host)
    guarded = app if key is None else BearerKey(app, key)
    uvicorn.Server(uvicorn.Config(guarded, host=api.host, port=api.port, log_level="warning")).run()


class BearerKey:
    """An ASGI wrapper that answers 401 to an HTTP request without the right bearer token."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            body = b'{"error": "a valid API key is required: send Authorization: Bearer <api.key>"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: dict) -> bool:
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
