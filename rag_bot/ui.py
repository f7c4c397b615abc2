"""The chat UI: a Gradio app built by `build_app()` and launched by `rag-bot chat`.

Answers stream into the chat; the sources panel lists each numbered reference with its file, page,
heading, a snippet and the scores. Questions from every browser session go through one queue and
reach the LLM one at a time. The chain is built on the first question (and built again after a
failure), so an empty store or a model that fails to load shows up as a readable message in the chat.
"""

from __future__ import annotations

import html
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .chain import message_text
from .config import UIConfig
from .errors import RagBotError
from .events import Declined, Found, Reply, Searched

if TYPE_CHECKING:
    from .chain import RagChain
    from .protocols import DocumentShelf

log = logging.getLogger(__name__)

TITLE = "rag-bot"
SOURCES_HINT = "Sources of the latest answer appear here."
SOURCES_MARK = "\n\n**Sources**  \n"
EVIDENCE_MARK = "\n\n**Evidence**  \n"
CLOSEST_MARK = "\n\n**Closest passages**  \n"  # the quotes under "the documents don't say"
# System fonts only: the browser fetches nothing from the internet.
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


class LazyChain:
    """Builds the chain on first use, once; a failed build is retried on the next question."""

    def __init__(self, factory: Callable[[], RagChain]) -> None:
        self._factory = factory
        self._chain: RagChain | None = None
        self._lock = threading.Lock()

    def __call__(self) -> RagChain:
        with self._lock:
            if self._chain is None:
                self._chain = self._factory()
            return self._chain

    def warm_up(self) -> None:
        """Build the chain and load the LLM in a background thread so the first answer comes sooner."""

        def run() -> None:
            try:
                self().llm.preload()
            except Exception as exc:  # reported again, readably, when someone asks
                log.warning("could not prepare the chat yet: %s", exc)

        # not a daemon: exiting while llama.cpp reads a model crashes the process; it waits instead
        threading.Thread(target=run, name="rag-bot-warm-up", daemon=False).start()


def build_app(get_chain: Callable[..., RagChain], title: str = TITLE, note: str = "",
              documents: Callable[[str | None], DocumentShelf] | None = None,
              collections: Callable[[], list[str]] | None = None) -> Any:
    """The Gradio Blocks app; `get_chain()` returns the chain (see `LazyChain`); `note` is shown
    under the title as text (which stages run); `documents(collection)` adds the Documents tab
    (upload, delete); `collections()` adds a picker of the store's collections, and then the chat
    asks `get_chain(name)` for the picked one."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"## {title}\nAnswers come from your ingested documents only; each one cites its sources."
                    + (f"\n\n<small>{markdown_text(note)}</small>" if note else ""), elem_id="header")
        picker = None
        if collections is not None:
            picker = gr.Dropdown(choices=[], label="Collection", elem_id="collection", interactive=True)

            def choices() -> Any:
                names = collections()
                return gr.update(choices=names, value=names[0] if names else None)

            app.load(choices, None, picker, queue=False)
        with gr.Tab("Chat", id="chat-tab", elem_id="chat-tab"):
            _chat_tab(get_chain, picker, documents)
        if documents is not None:
            from .documents_tab import documents_tab

            with gr.Tab("Documents", id="documents-tab", elem_id="documents-tab") as tab:
                listing, outputs = documents_tab(documents, picker)
            # filled when opened (it reads every chunk's metadata to count pages), not on each page load
            inputs = [picker] if picker is not None else None
            tab.select(listing, inputs, outputs, queue=False)
            if picker is not None:
                picker.change(listing, inputs, outputs, queue=False)
    return app


def _chat_tab(get_chain: Callable[..., RagChain], picker: Any = None,
              documents: Callable[[str | None], DocumentShelf] | None = None) -> None:
    import gradio as gr

    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chat", feedback_options=None)
            question = gr.Textbox(placeholder="Ask a question about your documents", show_label=False,
                                  elem_id="question", autofocus=True, max_length=2000)
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                clear = gr.Button("Clear chat", elem_id="clear")
        with gr.Column(scale=2):
            gr.Markdown("### Sources")
            sources = gr.HTML(f"<p>{SOURCES_HINT}</p>", elem_id="sources")
            viewer = SourceViewer(documents) if documents is not None else None

    def respond(message: str, history: list, collection: str | None = None) -> Iterator[tuple]:
        chain = (lambda: get_chain(collection)) if collection else get_chain
        reply = Reply()
        for shown in answer_events(chain, message, history, reply):
            yield shown + viewer.offered(reply.sources) if viewer is not None else shown

    def cleared() -> tuple:
        empty: tuple = ([], "", f"<p>{SOURCES_HINT}</p>")
        return empty + viewer.offered([]) if viewer is not None else empty

    def switched() -> tuple:  # another collection: the conversation cleared, a question being typed kept
        empty = cleared()
        return empty[:1] + empty[2:]

    picked = [picker] if picker is not None else []
    outputs = [chatbot, question, sources, *(viewer.outputs if viewer is not None else [])]
    for trigger in (question.submit, send.click):
        trigger(respond, [question, chatbot, *picked], outputs, concurrency_limit=1,
                concurrency_id="answer")  # one queue for both triggers
    clear.click(cleared, None, outputs, queue=False)
    if picker is not None:  # picked by the user, not filled in by the page load (which would wipe a question typed)
        picker.input(switched, None, [chatbot, *outputs[2:]], queue=False)
    if viewer is not None:
        viewer.opened.input(viewer.show, [viewer.opened, viewer.cited, *picked], viewer.shown)


class SourceViewer:
    """Under the sources panel: pick a source to see its passage in its document, a PDF's page as an
    image with the passage highlighted, any other document's text around it with the passage marked
    (escaped: a document's markup shows as text). Read from the collection's folder only."""

    def __init__(self, documents: Callable[[str | None], DocumentShelf]) -> None:
        import gradio as gr

        self.documents = documents
        self.cited = gr.State([])
        self.opened = gr.Radio(choices=[], label="Show a source in its document", elem_id="open-source",
                               visible=False)
        self.page = gr.Image(visible=False, elem_id="source-page", show_label=False, interactive=False,
                             type="pil", buttons=[])
        self.text = gr.HTML(visible=False, elem_id="source-text")
        self.outputs = [self.cited, self.opened, self.page, self.text]
        self.shown = [self.page, self.text]

    def offered(self, sources: list) -> tuple:
        """The outputs that offer `sources` (none: the viewer hidden)."""
        import gradio as gr

        cited = [{"n": s.n, "source": s.source, "page": s.page, "snippet": s.snippet} for s in sources]
        choices = [(f"[{s.n}] {s.source}" + (f", page {s.page}" if s.page is not None else ""), str(s.n))
                   for s in sources]
        return (cited, gr.update(choices=choices, value=None, visible=bool(choices)),
                gr.update(value=None, visible=False), gr.update(value="", visible=False))

    def show(self, n: str | None, cited: list[dict], collection: str | None = None) -> tuple:
        import gradio as gr

        source = next((item for item in cited if str(item["n"]) == n), None)
        if source is None:
            return gr.update(visible=False), gr.update(visible=False)
        try:
            view = self.documents(collection).view(source["source"], source["page"], source["snippet"])
        except RagBotError as exc:
            return gr.update(visible=False), gr.update(value=f"<p>{html.escape(str(exc))}</p>", visible=True)
        if view.image is not None:
            note = "" if view.found else "<p><small>The passage could not be located on the page (a scanned page?).</small></p>"
            return gr.update(value=view.image, visible=True), gr.update(value=note, visible=bool(note))
        note = "" if view.found else "<p><small>The passage could not be located; the document's start:</small></p>"
        body = (f"{html.escape(view.before)}<mark class='passage'>{html.escape(view.passage)}</mark>"
                f"{html.escape(view.after)}")
        return gr.update(value=None, visible=False), gr.update(visible=True, value=(
            f"{note}<p><code>{html.escape(view.source)}</code></p>"
            f"<pre class='in-document' style='white-space:pre-wrap;max-height:480px;overflow:auto'>{body}</pre>"))


def answer_events(get_chain: Callable[[], RagChain], message: str, history: list,
                  reply: Reply | None = None) -> Iterator[tuple[list, str, str]]:
    """(chat history, textbox value, sources html) after each streamed piece of one answer; `reply`
    (when given) is filled with the answer's events as they come.

    Everything that comes from a document or the LLM is escaped before it reaches the page: the chat
    renders Markdown, and a document's markup must show as text, never as elements or images."""
    message = (message or "").strip()
    history = list(history or [])
    if not message:
        yield history, "", f"<p>{SOURCES_HINT}</p>"
        return
    earlier = _earlier_turns(history)
    history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    panel = "<p><em>Searching the documents ...</em></p>"
    yield list(history), "", panel
    reply, searched = reply if reply is not None else Reply(), ""
    try:
        for event in get_chain().stream({"question": message, "history": earlier}):
            reply.apply(event)
            if isinstance(event, Searched) and event.rewritten:  # a follow-up rewritten: say what was searched for
                searched = f"<p class='searched'>Searched for: <em>{html.escape(event.question)}</em></p>"
            if isinstance(event, Found):
                panel = searched + sources_html(reply.sources)
            if isinstance(event, Declined):
                panel = searched + declined_html(reply.scope)
            # the quotes show at once, under the answer as it is written
            quotes = [] if reply.abstained else reply.quotes_to_show
            shown_quotes = EVIDENCE_MARK + _quote_lines(quotes) if quotes else ""
            history[-1] = {"role": "assistant", "content": markdown_text(reply.answer) + shown_quotes}
            yield list(history), "", panel
    except RagBotError as exc:
        history[-1] = {"role": "assistant", "content": markdown_text(f"Sorry, I cannot answer right now: {exc}")}
        yield history, "", f"<p>{html.escape(str(exc))}</p>"
        return
    except Exception as exc:  # a bug: say so readably, keep the details in the server log
        log.exception("answering %r failed", message)
        history[-1] = {"role": "assistant",
                       "content": f"Sorry, something went wrong ({type(exc).__name__}); the details are in the server log."}
        yield history, "", "<p>Something went wrong; see the server log.</p>"
        return
    if reply.sources:
        history[-1] = {"role": "assistant", "content": _with_references(reply.answer, reply.quotes_to_show, reply.sources,
                                                                          reply.abstained)}
        yield list(history), "", panel


def _earlier_turns(history: list) -> list[dict[str, str]]:
    """The earlier turns without the evidence and sources appended to each answer: the condense
    prompt needs their words, not the references."""
    return [{"role": turn["role"], "content": _plain(re.split(r"\n\n\*\*(?:Evidence|Closest passages|Sources)\*\*",
                                                             message_text(turn.get("content")))[0])}
            for turn in history if turn.get("role") in ("user", "assistant")]


def _with_references(text: str, quotes: list, found: list, closest: bool = False) -> str:
    """The finished answer as Markdown: the text, the quoted evidence (unless the reply is made of
    the quotes already: pass none; `closest`: headed as the closest passages, under "the documents
    don't say"), then the numbered sources; every piece escaped."""
    content = markdown_text(text.strip())
    if quotes:
        content += (CLOSEST_MARK if closest else EVIDENCE_MARK) + _quote_lines(quotes)
    refs = "\n".join(f"\\[{source.n}\\] {markdown_text(source.label())}  " for source in found)
    return f"{content}{SOURCES_MARK}{refs}"


def _quote_lines(quotes: list) -> str:
    return "\n".join(f"> \\[{q.n}\\] “{markdown_text(q.text)}”  " for q in quotes)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>:@-])")
_BARE_WWW = re.compile(r"(?i)\b(www)\.")


def markdown_text(text: str) -> str:
    """Text that the chat's Markdown renderer shows as written: HTML escaped, Markdown punctuation
    backslash-escaped, so a document's `![x](http://...)` or `<img>` is text, not an image. `:`, `@`
    and `www.` are escaped too, so that no bare address becomes a link (GFM autolinks)."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
    return _BARE_WWW.sub(r"\1\\.", escaped).replace("\n", "  \n")


def _plain(text: str) -> str:
    """The words of a chat message as the user saw them (escapes undone), for the condense prompt."""
    return html.unescape(re.sub(r"\\(.)", r"\1", text)).replace("  \n", "\n").strip()


def declined_html(scope: dict | None) -> str:
    """The sources panel for a declined question: why, and what the collection is about."""
    if not scope:
        return "<p>No sources: the question was not answered from the documents.</p>"
    near = scope.get("nearest") or {}
    where = html.escape(str(near.get("source") or "?")) + (f" · {html.escape(str(near['heading']))}" if near.get("heading") else "")
    about = "".join(f"<li>{html.escape(topic)}</li>" for topic in scope.get("about") or [])
    injection = scope.get("injection") or {}
    if injection.get("declined") and scope["score"] >= scope["threshold"]:
        reason = (f"it reads as an instruction to the assistant rather than a question about the documents "
                  f"(injection check {injection['score']:.3f} &ge; {injection['threshold']:.3f})")
    else:
        reason = f"the question looks out of scope (score {scope['score']:.3f} &lt; threshold {scope['threshold']:.3f})"
    if scope.get("second_opinion") is not None:
        reason += (f"; the model read the passages closest to it and did not find the answer there "
                   f"(margin {scope['second_opinion']:.2f})")
    return (f"<p>Not answered: {reason}.</p><p>Closest passage: <code class='source-file'>{where}</code> "
            f"(similarity {near.get('similarity', 0.0):.2f})</p>"
            + (f"<p>The documents are about:</p><ul class='about'>{about}</ul>" if about else ""))


def sources_html(sources: list) -> str:
    """The sources panel: one entry per reference with file, page, heading, snippet and scores."""
    if not sources:
        return f"<p>{SOURCES_HINT}</p>"
    items = []
    for source in sources:
        where = [f"<code class='source-file'>{html.escape(source.source)}</code>"]
        if source.page is not None:
            where.append(f"page {source.page}")
        if source.heading:
            where.append(html.escape(source.heading))
        score = f"<br><small>rerank score {source.rerank_score:.3f}</small>" if source.rerank_score is not None else ""
        items.append(
            f"<li class='source' data-n='{source.n}'><strong>[{source.n}]</strong> {' · '.join(where)}{score}"
            f"<blockquote>{html.escape(source.snippet)}</blockquote></li>"
        )
    scope = sources[0].scope_score
    header = f"<p><small>question in scope: score {scope:.3f}</small></p>" if scope is not None else ""
    return header + "<ol class='sources' style='list-style:none;padding-left:0'>" + "".join(items) + "</ol>"


def launch(app: Any, ui: UIConfig, *, block: bool = True, max_file_mb: float | None = None) -> Any:
    """Serve the app on `ui.host`:`ui.port`, with a login when `ui.auth` is set (failed logins
    throttled, see `rag_bot.login`); never shared unless asked; uploads larger than `max_file_mb` are
    refused by Gradio before they are stored."""
    import gradio as gr

    from starlette.middleware import Middleware

    from .login import Credentials, LoginGuard, LoginThrottle

    theme = gr.themes.Default(font=FONTS, font_mono=MONO_FONTS)
    auth = Credentials(ui.auth) if ui.auth else None
    guard = [Middleware(LoginGuard, throttle=LoginThrottle(auth.user))] if auth else []
    app.queue(default_concurrency_limit=1, max_size=ui.max_queue)
    return app.launch(server_name=ui.host, server_port=ui.port, auth=auth, share=ui.share, inbrowser=False,
                      prevent_thread_lock=not block, quiet=True, theme=theme, footer_links=[],
                      max_file_size=f"{max_file_mb:g}mb" if max_file_mb else None, app_kwargs={"middleware": guard})
