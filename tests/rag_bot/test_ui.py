"""The chat UI: the answer loop with fakes (fast), then the real app in headless Chromium (slow)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from rag_bot.chain import RagChain, load_chain
from rag_bot.config import ChatConfig, UIConfig, load_config
from rag_bot.errors import StoreError
from rag_bot.prompting import load_prompts
from rag_bot.ui import LazyChain, answer_events, build_app, launch, markdown_text
from tests.conftest import free_port
from tests.rag_bot.test_chain import DOCS, FakeLLM, FakeRetriever, doc

CHROMIUM = "/usr/bin/chromium"


def run(get_chain, message, history=()):
    return list(answer_events(get_chain, message, list(history)))


GENERATE = ChatConfig(answer_mode="generate", min_evidence=-1.0)  # the fake embeddings are not calibrated


def test_an_answer_streams_into_the_chat_and_cites_its_sources():
    chain = RagChain(FakeRetriever(DOCS), FakeLLM(reply="Run rag-bot ingest DIR [1]."), load_prompts(), GENERATE)
    steps = run(lambda: chain, "How do I ingest a folder?")
    partial = [history[-1]["content"].split("\n\n**Evidence**")[0] for history, _, _ in steps]
    assert partial[0] == "" and any(0 < len(text) < 20 for text in partial)  # grew piece by piece
    # the quotes show at once, before the first word of the answer
    first_quotes = next(i for i, (history, _, _) in enumerate(steps) if "**Evidence**" in history[-1]["content"])
    assert partial[first_quotes] == ""
    history, textbox, panel = steps[-1]
    assert history[0] == {"role": "user", "content": "How do I ingest a folder?"}
    content = history[1]["content"]
    assert content.startswith("Run rag\\-bot ingest DIR \\[1\\].\n\n**Evidence**  \n"
                              "> \\[1\\] “rag\\-bot ingest DIR walks a folder recursively.”")
    assert "**Sources**  \n\\[1\\] ingesting.md, \"Ingesting documents\"" in content
    assert textbox == ""
    for name in ("ingesting.md", "manual.pdf", "faq.html", "page 3", "Ingesting documents", "rerank score 0.500", "in scope: score 0.900"):
        assert name in panel


def test_history_from_the_chat_reaches_the_chain():
    llm = FakeLLM(condensed="How do I exclude files?")
    chain = RagChain(FakeRetriever(DOCS), llm, load_prompts(), GENERATE)
    earlier = [{"role": "user", "content": "How do I ingest?"},
               {"role": "assistant", "content": "Run it [1].\n\n**Sources**\n[1] ingesting.md"}]
    run(lambda: chain, "and leave files out?", earlier)
    assert "User: How do I ingest?\nAssistant: Run it [1].\n\nLast question" in llm.calls[0][1]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "How do I ingest?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": earlier[1]["content"]}]}]
    run(lambda: chain, "and leave files out?", as_parts)  # Gradio may send content as a list of parts
    assert llm.calls[0][1] == llm.calls[2][1]


def test_an_empty_store_is_a_readable_message_and_is_retried(tmp_path):
    attempts = []

    def factory():
        attempts.append(1)
        raise StoreError("store.collection: no documents in collection 'rag_bot'; run `rag-bot ingest DIR` first")

    lazy = LazyChain(factory)
    history, _, panel = run(lazy, "hello?")[-1]
    assert history[-1]["content"] == markdown_text("Sorry, I cannot answer right now: store.collection: no documents in "
                                                   "collection 'rag_bot'; run `rag-bot ingest DIR` first")
    assert "rag-bot ingest DIR" in panel
    run(lazy, "hello again?")
    assert len(attempts) == 2


def test_an_unexpected_failure_is_not_a_stack_trace():
    class Broken:
        def stream(self, *args, **kwargs):
            raise RuntimeError("boom")

    history, _, _ = run(lambda: Broken(), "hello?")[-1]
    assert history[-1]["content"] == "Sorry, something went wrong (RuntimeError); the details are in the server log."


def test_a_declined_question_has_no_sources_and_says_why():
    chain = RagChain(FakeRetriever(DOCS, declined=True), FakeLLM(), load_prompts(), ChatConfig())
    history, _, panel = run(lambda: chain, "what is the best pizza topping?")[-1]
    assert "seems to be about something else" in history[-1]["content"] and "**Sources**" not in history[-1]["content"]
    assert "score 0.010 &lt; threshold 0.400" in panel and "faq.html · FAQ &gt; Privacy" in panel
    assert "<li>ingesting.md (Formats)</li>" in panel


def test_document_markup_is_text_in_the_chat():
    hostile = doc("evil.md", "Click ![x](http://127.0.0.1:9/beacon.png) or <img src=x onerror=alert(1)> now, "
                             "the ingest walks a folder.", heading="<b>Evil</b> [link](javascript:alert(1))")
    reply = "The ingest walks a folder [1] <script>alert(1)</script>"
    chain = RagChain(FakeRetriever([hostile]), FakeLLM(reply=reply), load_prompts(), GENERATE)
    content = run(lambda: chain, "What does the ingest walk?")[-1][0][-1]["content"]
    assert "<script>" not in content and "<img" not in content and "<b>" not in content
    assert "](" not in content.replace("\\](", "")  # no Markdown link or image survives unescaped
    assert "&lt;script&gt;" in content and "&lt;b&gt;Evil&lt;/b&gt; \\[link\\]\\(javascript\\:alert\\(1\\)\\)" in content
    assert "“Click or now, the ingest walks a folder.”" in content  # a quote shows the words, not the image markup


@pytest.fixture
def login_app():
    """The chat app with `ui.auth` on a free loopback port; its base URL."""
    chain = RagChain(FakeRetriever(DOCS), FakeLLM(), load_prompts(), ChatConfig())
    app = build_app(lambda: chain)
    port = free_port()
    launch(app, UIConfig(port=port, auth="alice:s3cret"), block=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.close()


def test_auth_keeps_the_chat_behind_a_login(login_app):
    import urllib.error
    import urllib.request

    base = login_app
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/config", timeout=10)
    assert refused.value.code == 401
    assert login(base, "alice", "guess1")[0] == 400
    status, _, headers = login(base, "alice", "s3cret")  # too soon after a failure: refused at once
    assert status == 429 and headers.get("Retry-After") == "1"
    time.sleep(0.3)
    assert login(base, "alice", "guess2")[0] == 400
    assert login(base, "alice", "s3cret")[0] == 429  # the wait doubled (0.5 s)
    time.sleep(0.6)
    assert login(base, "alice", "s3cret")[0] == 200  # the right password gets in after the wait, and clears it
    assert login(base, "alice", "s3cret")[0] == 200


def login(base: str, username: str, password: str) -> tuple[int, float, Any]:
    """POST /login as Gradio's login form does: (status, seconds taken, headers)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    form = urllib.parse.urlencode({"username": username, "password": password}).encode()
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{base}/login", data=form, timeout=60) as response:
            return response.status, time.monotonic() - started, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started, exc.headers


def test_wrong_logins_never_hold_up_another_clients_request(login_app):
    """Issue 34, defect 1: the throttle slept on Gradio's event loop, so one wrong login froze every
    page for everyone (7.5 s for one, over 120 s for 45 in parallel). Now nothing waits: 45 wrong logins
    in parallel are answered at once (400, then 429 with Retry-After) while another client's requests
    stay fast."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    base = login_app

    def page() -> float:
        started = time.monotonic()
        with urllib.request.urlopen(f"{base}/", timeout=60) as response:
            assert response.status == 200
        return time.monotonic() - started

    page()  # the first request builds the page once
    with ThreadPoolExecutor(max_workers=16) as pool:
        attempts = [pool.submit(login, base, "alice", f"guess{i}") for i in range(45)]
        timings = [page() for _ in range(10)]
        results = [attempt.result() for attempt in attempts]
    statuses = [status for status, _, _ in results]
    assert set(statuses) == {400, 429} and all(seconds < 5 for _, seconds, _ in results)
    assert statuses.count(400) <= 3  # guesses in parallel are heard one at a time, not all at once
    assert max(timings) < 2.0, timings  # before: 23.6 s during three wrong logins


def test_failed_logins_double_the_wait_per_name_and_per_address():
    from rag_bot.login import Credentials, LoginThrottle

    now = [100.0]
    throttle = LoginThrottle("alice", base=0.25, cap=1.0, clock=lambda: now[0])
    assert throttle.retry_after("alice", "10.0.0.1") == 0.0
    waits = []
    for _ in range(4):
        throttle.record("alice", "10.0.0.1", ok=False)
        waits.append(throttle.retry_after("alice", "10.0.0.1"))
    assert waits == [0.25, 0.5, 1.0, 1.0]  # doubling up to the cap
    assert throttle.retry_after("alice", "10.0.0.2") == 1.0  # the name is held back from any address
    assert throttle.retry_after("bob", "10.0.0.1") == 1.0  # and the address for any name
    assert throttle.retry_after("bob", "10.0.0.2") == 0.0
    throttle.record("eve", "10.0.0.3", ok=False)
    assert throttle.retry_after("trudy", "10.0.0.4") == 0.25  # every unknown name shares one count
    now[0] += 0.5
    assert throttle.retry_after("alice", "10.0.0.1") == 0.5 and throttle.retry_after("trudy", "10.0.0.4") == 0.0
    throttle.record("alice", "10.0.0.1", ok=True)  # a good login clears the name and the address
    assert throttle.retry_after("alice", "10.0.0.1") == 0.0 and throttle.counted == 2
    assert throttle.begin("carol", "10.0.0.5") == 0.0  # admitted: now being checked
    assert throttle.begin("carol", "10.0.0.6") > 0 and throttle.begin("dave", "10.0.0.5") > 0  # one at a time
    throttle.record("carol", "10.0.0.5", ok=None)  # no outcome: nothing counted, the next is heard
    assert throttle.begin("carol", "10.0.0.6") == 0.0 and throttle.retry_after("carol", "10.0.0.6") == 0.0
    check = Credentials("alice:s3:cret")
    assert check("alice", "s3:cret") and not check("alice", "s3") and not check("bob", "s3:cret")


# --- the real app in a real browser ---------------------------------------------------------------


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("RAG_BOT_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing; install it with `apt-get install chromium`")
        pytest.skip(f"{CHROMIUM} is missing; install it with `apt-get install chromium` to run the browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def chat(chat_config_file):
    """The real app on a free loopback port; `llm_calls` counts generations by the real GGUF."""
    config = load_config(chat_config_file)
    lazy = LazyChain(lambda: load_chain(config))
    llm = lazy().llm
    llm.preload()
    calls = []
    real_stream = llm.stream

    def counted(*args, **kwargs):
        calls.append(args[1][:40])
        return real_stream(*args, **kwargs)

    llm.stream = counted
    app = build_app(lazy)
    port = free_port()
    launch(app, UIConfig(port=port), block=False)
    yield f"http://127.0.0.1:{port}/", calls
    app.close()


def ask(page, question: str, shown: bool = True) -> None:
    """Type `question` and send it; with `shown`, fail unless it shows in the chat (a question lost before
    the answer starts; a question queued behind another session's shows only when its turn comes)."""
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    if shown:
        page.wait_for_function("q => document.querySelector('#chat').innerText.includes(q)", arg=question[:40],
                               timeout=30_000)


def last_answer(page) -> str:
    messages = page.locator("#chat .message-row")
    return messages.nth(messages.count() - 1).inner_text() if messages.count() else ""


def wait_for_sources(page, seconds: float) -> str:
    """The last reply once it lists its sources; a reply that never does fails with what it said."""
    deadline = time.monotonic() + seconds
    while "Sources" not in page.locator("#chat").inner_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Sources" in page.locator("#chat").inner_text(), f"no sources after {seconds:.0f} s: {last_answer(page)!r}"
    return last_answer(page)


@pytest.mark.slow
def test_the_chat_in_a_real_browser(browser, chat, tmp_path):
    chat_url, llm_calls = chat
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(chat_url)
    ask(page, "Where does rag-bot keep its data?")
    seen = set()
    deadline = time.monotonic() + 120
    while "Sources" not in last_answer(page) and time.monotonic() < deadline:
        text = last_answer(page)
        if text.strip():
            seen.add(text)
        time.sleep(0.05)
    answer = last_answer(page)
    assert "Sources" in answer, f"no finished answer after 120 s: {answer!r}"
    assert len(seen) >= 2, "the answer did not stream: it appeared in one piece"
    panel = page.locator("#sources").inner_text()
    cited = [name for name in ("getting-started.md", "configuration.md", "faq.html", "ingesting.md",
                               "troubleshooting.md", "how-retrieval-works.pdf") if name in panel]
    assert cited and all(name in answer for name in cited)
    assert "getting-started.md" in panel or "configuration.md" in panel
    # the evidence: the sentence of getting-started.md that says where the data lives, quoted
    assert "rag_bot` next to `config.yaml` by default" in answer, answer
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
    assert (tmp_path / "chat.png").stat().st_size > 10_000

    page.locator("#clear").click()  # a new conversation: nothing to condense
    page.wait_for_function("!document.querySelector('#chat').innerText.includes('keep its data')", timeout=10_000)
    assert page.locator("#sources").inner_text().strip().endswith("Sources of the latest answer appear here.")
    calls_before = len(llm_calls)
    ask(page, "what is the best pizza topping?")
    page.wait_for_function("document.querySelector('#chat').innerText.includes('seems to be about something else')", timeout=30_000)
    assert len(llm_calls) == calls_before  # declined without calling the LLM
    panel = page.locator("#sources").inner_text()
    assert "out of scope" in panel and "The documents are about" in panel and "getting-started.md" in panel


@pytest.fixture
def beacon():
    """A loopback HTTP server that records every request: nothing a document says may reach it."""
    import http.server
    import threading

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


@pytest.mark.slow
def test_a_hostile_document_is_text_in_a_real_browser(browser, beacon):
    """File name, heading, passage and the LLM's answer all carry markup: images pointing at the
    beacon, `<img onerror>`, `<script>`, a `javascript:` link. None fetches, none runs, and the
    citation reads as written."""
    url, hits = beacon
    text = (f"The ingest walks a folder. ![md]({url}/md-image.png) <img src={url}/html-image.png> "
            f"<img src=x onerror=\"window.pwned='onerror'\"> <script>window.pwned='script'</script> "
            f"[click me](javascript:window.pwned='link') <a href=\"{url}/anchor\">anchor</a>")
    hostile = doc(f"evil<img src={url}/name.png>.md", text,
                  heading=f"Guide ![h]({url}/heading.png) <b>bold</b>")
    reply = f"The ingest walks a folder [1]. ![llm]({url}/llm-image.png) <script>window.pwned='llm'</script>"
    chain = RagChain(FakeRetriever([hostile]), FakeLLM(reply=reply), load_prompts(), GENERATE)
    note = f"Reranking off: owner/model: the hub at {url} answers HTTP 404 for it <b>x</b>"
    app = build_app(lambda: chain, note=note)
    port = free_port()
    launch(app, UIConfig(port=port), block=False)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        ask(page, "What does the ingest walk?")
        wait_for_sources(page, 60)
        page.wait_for_timeout(1500)  # time for any image the page would load
        answer = last_answer(page)
        assert f"[1] evil<img src={url}/name.png>.md, \"Guide ![h]({url}/heading.png) <b>bold</b>\"" in answer
        assert f"![llm]({url}/llm-image.png)" in answer
        assert page.evaluate("window.pwned") is None
        chat_links = page.eval_on_selector_all("#chat a, #sources a", "els => els.map(e => e.href)")
        assert not [link for link in chat_links if link.startswith("javascript:") or url in link]
        assert page.locator("#chat img, #sources img").evaluate_all(
            "els => els.filter(e => e.src.includes('127.0.0.1')).length") == 0
        assert "<script>window.pwned='script'</script>" in page.locator("#sources").inner_text()
        assert note in page.locator("#header").inner_text()  # which stages run, as plain text
        assert hits == []
    finally:
        app.close()


@pytest.mark.slow
def test_several_browser_sessions_at_once_all_get_answers(browser, chat):
    chat_url, llm_calls = chat
    pages = []
    for question in ("Which file formats can I ingest?", "Does rag-bot send my documents anywhere?",
                     "How do I run a Chroma server?"):
        page = browser.new_context().new_page()
        page.goto(chat_url)
        ask(page, question, shown=False)
        pages.append(page)
    for page in pages:
        wait_for_sources(page, 180)
        assert "Sorry" not in last_answer(page)
        assert page.locator("#sources .source").count() >= 1
    assert len(llm_calls) == 3  # each question reached the one LLM, one after another


@pytest.mark.slow
def test_a_running_chat_follows_ingests_and_rebuilds(tmp_path, gguf_path, monkeypatch):
    """UI up, `rag-bot ingest` beside it: a new file is found without a restart, a rebuild is
    followed, and a question asked while the collection is gone says to try again in a moment."""
    import shutil
    import subprocess

    from tests.conftest import EXAMPLE_DOCS, RAG_BOT

    monkeypatch.setattr("rag_bot.live.FOLLOW_SECONDS", 0.0)
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLE_DOCS, docs)
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: data\nreranker: {{enabled: false}}\nfilter: {{enabled: false}}\n"
                      f"llm: {{model_path: {gguf_path}}}\nchat: {{answer_mode: extract}}\n")

    def ingest(*extra):
        subprocess.run([RAG_BOT, "--config", str(config), "ingest", str(docs), "--no-progress", *extra],
                       check=True, capture_output=True, timeout=600)

    def sources_of(question):
        history, _, panel = run(lazy, question)[-1]
        return history[-1]["content"], panel

    ingest()
    lazy = LazyChain(lambda: load_chain(str(config)))
    content, _ = sources_of("What happens if the power goes out during an ingest?")
    assert "ingesting.md" in content
    (docs / "holidays.md").write_text("# Office holidays\n\nThe office is closed on the first Monday of August "
                                      "for the summer party.\n")
    ingest()
    content, panel = sources_of("When is the office closed for the summer party?")
    assert "first Monday of August" in content and "holidays.md" in panel
    ingest("--rebuild")
    content, panel = sources_of("When is the office closed for the summer party?")
    assert "first Monday of August" in content and "holidays.md" in panel
    from rag_bot.store import open_client

    open_client(load_config(str(config))).delete_collection("rag_bot")  # as a rebuild does, first
    content, _ = sources_of("When is the office closed for the summer party?")
    assert "is being rebuilt" in content and "try again in a moment" in content


@pytest.fixture
def served_chat(tmp_path, gguf_path):
    """`rag-bot chat` (the real CLI wiring) over a copy of examples/docs with its corpus-trained scope
    filter, answering with quotes only (`answer_mode: extract`: these tests are about what surrounds the answer,
    and a written answer by the tiny test model took over three minutes on one CI machine), and a second
    collection `notes`; stopped at the end."""
    import shutil
    import subprocess
    import urllib.request

    from tests.conftest import EXAMPLE_DOCS, RAG_BOT

    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLE_DOCS, docs)
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: data\nreranker: {{enabled: false}}\nllm: {{model_path: {gguf_path}}}\n"
                      "chat: {answer_mode: extract}\n")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "orchard.md").write_text("# The orchard\n\nThe old orchard behind the mill grows Bramley apples and "
                                      "Conference pears; it was planted by Ada Penrose in 1898.\n")
    for command in (["ingest", str(docs), "--no-progress"], ["train-filter", "--from-corpus"],
                    ["ingest", str(notes), "--no-progress", "--collection", "notes"]):
        subprocess.run([RAG_BOT, "--config", str(config), *command], check=True, capture_output=True, timeout=600)
    port = free_port()
    # Gradio's upload folder under the working directory, as when the chat is started from / or /tmp:
    # there Gradio itself refuses a hidden file before rag-bot's code sees it
    server = subprocess.Popen([RAG_BOT, "--config", str(config), "chat", "--port", str(port)], cwd=tmp_path,
                              env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio-uploads")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        yield url, docs
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_status(page, text: str) -> str:
    page.wait_for_function(f"document.querySelector('#doc-status textarea').value.includes({text!r})", timeout=180_000)
    return page.locator("#doc-status textarea").input_value()


@pytest.mark.slow
def test_upload_ask_delete_ask_again_in_a_real_browser(browser, served_chat, tmp_path):
    url, docs = served_chat
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_function("document.querySelector('#files')?.innerText.includes('getting-started.md')", timeout=30_000)
    assert page.locator("#doc-folder textarea").input_value() == str(docs.resolve())

    upload = tmp_path / "upload" / "lighthouse.md"
    upload.parent.mkdir()
    upload.write_text("# Karrow Point\n\nThe lighthouse on Karrow Point was built in 1911 by the engineer Maud Ellery. "
                      "Its light can be seen twenty nautical miles out to sea.\n")
    page.locator("#upload input[type=file]").set_input_files(str(upload))
    status = wait_for_status(page, "chunks in collection")
    assert status.startswith("Added: lighthouse.md\nscope filter: retrained from the changed corpus")
    assert (docs / "lighthouse.md").read_text() == upload.read_text()
    assert "lighthouse.md" in page.locator("#files").inner_text()
    # issue 34, defect 8: a hidden file got Gradio's bare "Error" on every field, with no reason
    hidden = tmp_path / "upload" / ".notes.md"
    hidden.write_text("# Hidden\n\nA hidden file.\n")
    page.locator("#upload input[type=file]").set_input_files(str(hidden))
    status = wait_for_status(page, "Not added: .notes.md")
    assert status == "Not added: .notes.md: a hidden file (its name starts with a dot); rename it and add it again"
    assert not (docs / ".notes.md").exists() and "lighthouse.md" in page.locator("#files").inner_text()

    page.get_by_role("tab", name="Chat").click()
    ask(page, "Who built the lighthouse on Karrow Point?")
    wait_for_sources(page, 120)
    answer = last_answer(page)
    assert "Maud Ellery" in answer and "lighthouse.md" in page.locator("#sources").inner_text(), answer

    page.get_by_role("tab", name="Documents").click()
    choice = page.locator("#delete-choice input")
    choice.click()
    choice.fill("lighthouse")
    page.get_by_role("option", name="lighthouse.md").click()
    page.locator("#delete").click()
    status = wait_for_status(page, "Removed: lighthouse.md")
    assert not (docs / "lighthouse.md").exists()
    assert "lighthouse.md" not in page.locator("#files").inner_text()

    page.get_by_role("tab", name="Chat").click()
    page.locator("#clear").click()
    ask(page, "Who built the lighthouse on Karrow Point?")
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Karrow') && "
                           "(document.querySelector('#chat').innerText.includes('Sources') || "
                           "document.querySelector('#chat').innerText.includes('something else') || "
                           "document.querySelector('#chat').innerText.includes(\"don't\"))", timeout=120_000)
    time.sleep(1.0)
    again = last_answer(page)
    assert "Maud Ellery" not in again and "lighthouse.md" not in again, again


@pytest.mark.slow
def test_the_upload_route_needs_the_login_too(tmp_path):
    import urllib.error
    import urllib.request

    from ingest.library import Library
    from tests.conftest import FakeEmbeddings, make_config

    chain = RagChain(FakeRetriever(DOCS), FakeLLM(), load_prompts(), ChatConfig())
    library = Library(make_config(tmp_path, embedding={"model": "fake"}), FakeEmbeddings(size=16))
    app = build_app(lambda: chain, documents=lambda name: library)
    port = free_port()
    launch(app, UIConfig(port=port, auth="alice:s3cret"), block=False, max_file_mb=1)
    body = (b"--X\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.md\"\r\n"
            b"Content-Type: text/markdown\r\n\r\nhello\r\n--X--\r\n")
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/upload", data=body, method="POST",
                                         headers={"Content-Type": "multipart/form-data; boundary=X"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert not list(tmp_path.rglob("x.md"))
    finally:
        app.close()


@pytest.mark.slow
def test_the_collection_picker_switches_chat_and_documents(browser, served_chat):
    url, _ = served_chat
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    picker = page.locator("#collection input")
    page.wait_for_function("document.querySelector('#collection input')?.value === 'rag_bot'", timeout=30_000)
    picker.click()
    offered = [text.replace("✓", "").strip() for text in page.get_by_role("option").all_inner_texts()]
    assert sorted(offered) == ["notes", "rag_bot"]  # the picked one carries a tick
    page.get_by_role("option", name="notes").click()
    ask(page, "Who planted the old orchard behind the mill?")
    wait_for_sources(page, 120)
    assert "Ada Penrose" in last_answer(page) and "orchard.md" in page.locator("#sources").inner_text()
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_function("document.querySelector('#files').innerText.includes('orchard.md')", timeout=30_000)
    assert "getting-started.md" not in page.locator("#files").inner_text()


@pytest.mark.slow
def test_a_question_typed_while_the_page_loads_is_kept(browser):
    """The page load fills in the collection picker; that is not the user picking another collection, so it
    must not clear the chat (CI lost a question this way when listing the collections was slow)."""
    chain = RagChain(FakeRetriever(DOCS), FakeLLM(reply="Run rag-bot ingest DIR [1]."), load_prompts(), GENERATE)

    def slow_collections() -> list[str]:
        time.sleep(3)
        return ["rag_bot", "notes"]

    app = build_app(lambda name=None: chain, collections=slow_collections)
    port = free_port()
    launch(app, UIConfig(port=port), block=False)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#question textarea").fill("How do I ingest a folder?")
        page.wait_for_function("document.querySelector('#collection input')?.value === 'rag_bot'", timeout=30_000)
        assert page.locator("#question textarea").input_value() == "How do I ingest a folder?"
        page.locator("#question textarea").press("Enter")
        assert "rag-bot ingest DIR" in wait_for_sources(page, 30)
        page.locator("#question textarea").fill("Who planted the orchard?")
        page.locator("#collection input").click()
        page.get_by_role("option", name="notes").click()  # the user picks another one: a new conversation
        page.wait_for_function("!document.querySelector('#chat').innerText.includes('ingest DIR')", timeout=10_000)
        assert page.locator("#question textarea").input_value() == "Who planted the orchard?"
    finally:
        app.close()


@pytest.mark.slow
def test_a_source_opens_its_passage_in_its_document(browser, served_chat):
    url, _ = served_chat
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(url)
    ask(page, "How does the cross-encoder reranker score a passage?")
    wait_for_sources(page, 180)
    offered = page.locator("#open-source label")
    labels = offered.all_inner_texts()
    assert labels and all(label.startswith("[") for label in labels)
    panel = page.locator("#sources").inner_text()
    pdf = next((label for label in labels if ".pdf" in label), None)
    text = next((label for label in labels if ".pdf" not in label), None)
    assert pdf is not None and text is not None, labels
    page.get_by_label(text, exact=True).check()  # a text document: the passage marked in its section
    page.wait_for_function("document.querySelector('#source-text mark')?.innerText.length > 20", timeout=30_000)
    marked = " ".join(page.locator("#source-text mark").inner_text().split())
    assert marked.split()[0] in panel and len(page.locator("#source-text pre").inner_text()) > len(marked)
    assert not page.locator("#source-page img").is_visible()
    page.get_by_label(pdf, exact=True).check()  # a PDF: its page as an image with the passage highlighted
    page.wait_for_function("document.querySelector('#source-page img')?.naturalWidth > 500", timeout=30_000)
    shot = page.locator("#source-page img").screenshot()
    from io import BytesIO

    from PIL import Image

    colours = Image.open(BytesIO(shot)).convert("RGB").getcolors(1 << 20)
    marker = sum(count for count, (r, g, b) in colours if r > 230 and 200 < g < 245 and b < 170)
    assert marker > 500, "no highlighted passage on the page"


def test_a_passage_shown_in_its_document_is_escaped_text():
    from ingest.passage import PassageView
    from rag_bot.ui import SourceViewer

    class Shelf:
        def view(self, source, page, snippet):
            return PassageView(source, before="<b>bold</b> ", passage="<img src=x onerror=alert(1)>", after=" after",
                               found=True)

    viewer = SourceViewer.__new__(SourceViewer)
    viewer.documents = lambda collection: Shelf()
    image, shown = viewer.show("1", [{"n": 1, "source": "a<script>.md", "page": None, "snippet": "x"}])
    assert image["visible"] is False
    assert "<img" not in shown["value"] and "&lt;img src=x onerror=alert(1)&gt;" in shown["value"]
    assert "<mark class='passage'>&lt;img" in shown["value"] and "a&lt;script&gt;.md" in shown["value"]
