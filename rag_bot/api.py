"""The OpenAI-compatible HTTP API that `rag-bot serve` runs: a thin edge over the same chain as the
chat UI and `rag-bot ask`.

- `POST /v1/chat/completions` (streamed as server-sent events or not): `model` names the collection,
  `messages` carry the history. The reply's text is what `rag-bot ask` prints (the answer with its
  `[n]` references, the evidence quotes, the numbered sources); the extra field `rag_bot` (which
  OpenAI clients ignore) holds the same as `rag-bot ask --json`: sources with snippets and scores,
  evidence quotes, declined, reason, grounded, the scope check. A declined question is a normal
  completion whose text says why.
- `GET /v1/models`: the collections. `POST /v1/retrieve`: the retriever's passages with every score.
  `GET /health`: no key needed. The OpenAPI schema: `/openapi.json` (no `/docs` page: Swagger UI
  would load from a CDN).

With `api.key` (or `$RAG_BOT_API_KEY`) every `/v1` request must send `Authorization: Bearer KEY`.
Everything is JSON; no document text is ever put into HTML. Imported only by `rag-bot serve` (and
tests): fastapi loads with it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .config import APIConfig
from .errors import ConfigError, RagBotError, first_line
from .events import Event, Reply
from .reply import terminal_text
from .service import Busy

if TYPE_CHECKING:
    from .service import Collections

log = logging.getLogger(__name__)

KEY_ENV = "RAG_BOT_API_KEY"
DISCONNECT_POLL = 0.25  # seconds between looks at whether the client of a whole reply is still there
EXTRA = "rag_bot"  # the field of a completion that carries sources, evidence and the scope check


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat completion request that rag-bot reads; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="The collection to answer from (see GET /v1/models).")
    messages: list[Message] = Field(min_length=1, description="The conversation; the last message is the question.")
    stream: bool = Field(False, description="Send the reply as server-sent events, piece by piece.")


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, description="The question or search text.")
    model: str | None = Field(None, description="The collection; default: store.collection.")
    k: int | None = Field(None, ge=1, le=1000, description="Passages to return; default: reranker.top_n.")
    filter: dict[str, Any] | None = Field(None, description="A Chroma metadata filter (`where`).")
    sources: list[str] | None = Field(None, description="Only passages from these files (paths as ingested).")


class Failure(Exception):
    """An error reply in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": None}}


MIN_KEY_LENGTH = 8  # as api.key


def api_key(api: APIConfig) -> str | None:
    """The key requests must carry: `api.key`, else `$RAG_BOT_API_KEY` (at least 8 characters, as
    `api.key`), else none."""
    if api.key:
        return api.key
    key = os.environ.get(KEY_ENV) or None
    if key is not None and len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"${KEY_ENV}: {len(key)} characters is too short to guess-proof the API; use at least "
                          f"{MIN_KEY_LENGTH} (for example: python -c 'import secrets; print(secrets.token_urlsafe())')")
    return key


def check_exposure(api: APIConfig) -> None:
    """Refuse to listen beyond loopback without a key."""
    if api_key(api) is None and not is_loopback(api.host):
        raise ConfigError(f"api.host: {api.host} is reachable from other machines; set api.key "
                          f"(or ${KEY_ENV}) so that requests need it, or serve on 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_api(service: Collections, api: APIConfig) -> FastAPI:
    """The FastAPI app over `service`; `api` gives the key (and the queue size was given to `service`)."""
    key = api_key(api)
    # No /docs page: Swagger UI would load its scripts from a CDN, and nothing here reaches the internet.
    app = FastAPI(title="rag-bot", version=__version__, docs_url=None, redoc_url=None, description=(
        "Answers from your ingested documents, OpenAI-compatible, with the sources and evidence of each answer."))

    async def authorised(request: Request) -> None:
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise Failure(401, "a valid API key is required: send Authorization: Bearer <api.key>", "invalid_api_key")

    @app.exception_handler(Failure)
    async def failure(request: Request, exc: Failure) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return JSONResponse(Failure(400, f"{where or 'body'}: {first['msg']}", "invalid_request").body(), 400)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> dict[str, Any]:
        names = await _off_loop(service.names)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rag-bot"}
                                           for name in names]}

    @app.post("/v1/retrieve", dependencies=[Depends(authorised)])
    async def retrieve(body: RetrieveRequest, request: Request) -> dict[str, Any]:
        _check_text(body.query, "query")
        _check_filter(body.filter)
        name = await _collection(service, body.model)

        def search() -> dict[str, Any]:
            retriever = service.retriever(name)
            result = retriever.search(body.query, filter=body.filter, sources=body.sources, k=body.k)
            return {"model": name, **result.to_json(), "reranker": retriever.reranker_status}

        return await _answer(service, search, request)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)], response_model=None)
    async def completions(body: ChatRequest, request: Request) -> Any:
        question = _question(body.messages, api)
        name = await _collection(service, body.model)
        history = [message.model_dump(include={"role", "content"}) for message in body.messages[:-1]]
        completion = Completion(name)
        stop = threading.Event()  # set when the client goes away: the work stops at the next stage
        if body.stream:
            pieces = _stream(service, lambda: service.chain(name).stream({"question": question, "history": history}),
                             stop)
            return StreamingResponse(completion.events(pieces), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        def answer() -> dict[str, Any]:
            return completion.whole(service.chain(name).stream({"question": question, "history": history}), stop)

        return await _answer(service, answer, request, stop)

    return app


class Completion:
    """One reply in the chat completion format, whole or as chunks."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, events: Iterator[Event], stop: threading.Event | None = None) -> dict[str, Any]:
        """The complete reply from the chain's events (cut short when `stop` is set: nobody waits for it)."""
        reply = Reply()
        text = "".join(terminal_text(_stopped(events, stop), reply)).strip()
        message = {"role": "assistant", "content": text}
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                EXTRA: reply.to_json(full=True)}

    async def events(self, pieces: AsyncIterator[str | dict]) -> AsyncIterator[str]:
        """Server-sent events: the role, the text piece by piece, then the end with the `rag_bot` field."""
        yield _sse(self._chunk({"role": "assistant", "content": ""}))
        try:
            async for piece in pieces:
                if isinstance(piece, str):
                    yield _sse(self._chunk({"content": piece}))
                else:
                    yield _sse({**self._chunk({}, "stop"), EXTRA: piece})
        except Failure as exc:
            yield _sse(exc.body())
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def _stopped(events: Iterator[Event], stop: threading.Event | None = None) -> Iterator[Event]:
    """The events until `stop` is set; then the chain is closed at its next event, so that no later
    stage (the judge, the LLM) runs for a client that has gone."""
    try:
        for event in events:
            if stop is not None and stop.is_set():
                log.info("the client went away; the answer stopped")
                return
            yield event
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _question(messages: list[Message], api: APIConfig) -> str:
    """The last message, checked: the user's, not empty, valid Unicode, and within the size limits."""
    from .chain import message_text

    last = messages[-1]
    if last.role != "user":
        raise Failure(400, "messages: the last message must be the user's question", "invalid_messages")
    question = message_text(last.content).strip()
    if not question:
        raise Failure(400, "messages: the question is empty", "invalid_messages")
    if len(question) > api.max_question_chars:
        raise Failure(400, f"messages: the question is {len(question)} characters; the limit is "
                           f"{api.max_question_chars} (api.max_question_chars)", "question_too_long")
    earlier = [message_text(message.content) for message in messages[:-1]]
    if sum(map(len, earlier)) > api.max_history_chars:
        raise Failure(400, f"messages: the earlier messages hold {sum(map(len, earlier))} characters; the limit is "
                           f"{api.max_history_chars} (api.max_history_chars): send fewer turns", "history_too_long")
    for text in [question, *earlier]:
        _check_text(text, "messages")
    return question


def _check_text(text: str, where: str) -> None:
    """400 for text that is not valid Unicode (a lone surrogate such as \\ud800, which JSON allows)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Failure(400, f"{where}: the text is not valid Unicode ({exc.reason} at character {exc.start}); "
                           "send UTF-8 text", "invalid_text") from None


def _check_filter(where: dict[str, Any] | None) -> None:
    """400 for a `filter` Chroma would refuse, checked by Chroma's own validator before any work."""
    if where is None:
        return
    from chromadb.api.types import validate_where

    try:
        validate_where(where)
    except (ValueError, TypeError) as exc:
        raise Failure(400, f"filter: {first_line(exc)}; see Chroma's metadata filters ($eq, $in, $and, ...)",
                      "invalid_filter") from None


async def _collection(service: Collections, model: str | None) -> str:
    """The collection a request names; 404 (listing the collections) when there is none of that name."""
    if model is None:
        return service.default
    names = await _off_loop(service.names)
    if model not in names:
        raise Failure(404, f"model: no collection named {model!r}; the collections are: {', '.join(names) or 'none'} "
                           "(ingest a folder with rag-bot ingest DIR --collection NAME)", "model_not_found")
    return model


async def _off_loop(work: Callable[[], Any]) -> Any:
    try:
        return await asyncio.to_thread(work)
    except RagBotError as exc:
        raise Failure(503, str(exc), "unavailable", "server_error") from exc


async def _answer(service: Collections, work: Callable[[], Any], request: Request | None = None,
                  stop: threading.Event | None = None) -> Any:
    """`work()` on the service's worker, its `RagBotError` as a 503 and a full queue as a 429. While it
    waits, the client is watched: when it goes away, `stop` is set (work that checks it ends early)
    and work still queued is dropped."""
    stop = stop or threading.Event()

    def unless_gone() -> Any:
        if stop.is_set():
            return None
        return work()

    try:
        future = asyncio.wrap_future(service.run(unless_gone))
    except Busy as exc:
        raise Failure(429, str(exc), "busy", "rate_limit_error") from exc
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL)
            if done:
                return future.result()
            if request is not None and await request.is_disconnected():
                stop.set()
    except RagBotError as exc:
        raise Failure(503, str(exc), "unavailable", "server_error") from exc


def _stream(service: Collections, events: Callable[[], Iterator[Event]],
            stop: threading.Event) -> AsyncIterator[str | dict]:
    """Start the answer on the worker now (a full queue is a 429 before any byte is sent) and give
    its text pieces as they are written, then the `rag_bot` field (a dict). A client that goes away
    sets `stop`: the work ends at the chain's next event (see `_stopped`), or before it starts."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        reply = Reply()
        try:
            if stop.is_set():
                return
            for piece in terminal_text(_stopped(events(), stop), reply):
                if stop.is_set():
                    return
                put(piece)
            put(reply.to_json(full=True))
        except RagBotError as exc:
            put(Failure(503, str(exc), "unavailable", "server_error"))
        except Exception as exc:  # the details go to the log, not to the client
            log.exception("the answer failed")
            put(Failure(500, f"the answer failed ({type(exc).__name__}); the details are in the server's log",
                        "internal", "server_error"))
        finally:
            put(done)

    try:
        service.run(work)
    except Busy as exc:
        raise Failure(429, str(exc), "busy", "rate_limit_error") from exc

    async def pieces() -> AsyncIterator[str | dict]:
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, Failure):
                    raise item
                yield item
        finally:
            stop.set()

    return pieces()


def serve(app: FastAPI, api: APIConfig) -> None:
    """Run the API with uvicorn on `api.host`:`api.port` until interrupted."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=api.host, port=api.port, log_level="warning"))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        raise ConfigError(f"api.port: cannot listen on {api.host}:{api.port}; choose another port with --port "
                          "or api.port") from exc
