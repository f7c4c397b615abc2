"""The answer chain, a LangChain Runnable: rewrite a follow-up that leans on the conversation -> retrieve
-> decline out-of-scope questions (after the model's second opinion) -> the quotes (shown at once) and
what the word rules notice -> the judge model reads the quotes and decides whether the documents answer
-> answer by `chat.answer_mode`:
- `auto` (default): the LLM writes a short answer citing passages [n], streamed, then verified
  (`verify`: its numbers, names and code in the passages it cites, the model's yes); an answer that
  fails is replaced by the quotes;
- `generate`: the written answer even when it fails verification (flagged);
- `extract`: the quotes are the answer (no writing).
The LLM and the judge are one model by default (see `load_judge`). docs/answers.md has each step.

Citations are numbered references built from document metadata (source, page, heading), not asked
of the LLM: passage [n] in the prompt is source [n] in the answer. Every answer carries one to three
evidence quotes from those passages, each with its number.

    from rag_bot import load_chain
    chain = load_chain("config.yaml")
    for event in chain.stream({"question": "how do I ingest a folder?"}):
        if isinstance(event, Text):                            # from rag_bot.events
            print(event.piece, end="")
    answer = chain.invoke("what is the best pizza topping?")   # answer["declined"] is True
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from langchain_core.documents import Document
from langchain_core.runnables import Runnable, RunnableConfig

from .config import ChatConfig, Config, load_config
from .errors import ConfigError
from .events import (Abstained, Cited, Declined, Event, Finished, Found, Judged, Recited, Replaced, Reply, Searched, Text,
                     Verified)
from .citing import SAYS_NOT_COVERED, recited, with_citations
from .contrasts import contrast
from .evidence import (Evidence, EvidenceFinder, Quote, copied, facts_missing, named_terms, numbers_missing,
                       numbers_out_of_place, split_sentences, without_list_numbers)
from .injections import defuse_passages
from .judge import judged
from .llm import ChatLLM, load_llm
from .names import shown
from .prompting import Prompts, load_prompts, prompts_dir
from .questions import depends_on_history, points_back, still_points_back, words_left_out, words_made_up, yes_no

if TYPE_CHECKING:
    from .protocols import AnswerJudgeModel, KeywordIndex
    from .results import Retrieval
    from .retriever import RagRetriever

log = logging.getLogger(__name__)

OUT_OF_SCOPE = "out_of_scope"
NOTHING_FOUND = "nothing_found"
NOT_COVERED = "not_covered"
_CITED = re.compile(r"\[(\d+)\]")
TEMPLATE_RESERVE = 32  # tokens kept free for chat-template markup and tokenization at the joins
MIN_PASSAGE_TOKENS = 48  # a trimmed passage shorter than this is left out
PASSAGE_MARKUP_TOKENS = 24  # a passage's tags, number and heading line
SNIPPET_CHARS = 240
# how much surer the judge must be when a word rule fired (a term never mentioned, a number not stated, a
# contrast the quotes never make, weak evidence): the rules inform, the model reading the passages decides
RULE_BAR = 2.0
# how much surer than chat.judge_level the model must be to answer a question the scope gate declined: over
# examples/docs, 55 Banking77 messages the gate declined got margins up to 1.37, and nine questions in users' words
# it declined ("what's bm25 for", "how do i check it's working") -0.02 to 1.91 (BENCHMARKS.md, session 24)
SECOND_OPINION_BAR = 0.4


@dataclass
class Flags:
    """What the word rules noticed (see `RagChain.rule_flags`)."""

    missing: list[str]  # terms no chunk of the collection mentions
    absent: list[str]  # numbers of the question the passages found never state
    opposed: str | None  # the contrast the quotes never make, in words
    weak: bool  # the best sentence is less similar than chat.min_evidence

    @property
    def any(self) -> bool:
        return bool(self.missing or self.absent or self.opposed or self.weak)

    @property
    def raise_bar(self) -> bool:
        """Whether the judge must be surer (`RULE_BAR`). Weak evidence does not count here: the judge reads the
        same quotes and measures the same thing, and in users' words ("how do i wipe everything", margin 2.9)
        the rule was wrong in 2 of 2 firings (BENCHMARKS.md, session 26)."""
        return bool(self.missing or self.absent or self.opposed)

    def why(self, decided_by_rules: bool) -> str:
        """The words after "The documents don't say." (none when the model decided)."""
        if self.missing:
            return f" They never mention {_listed(self.missing)}."
        if self.absent:
            return f" The passages closest to the question never mention {_listed(self.absent)}."
        return f" {self.opposed}" if self.opposed and decided_by_rules else ""

    def to_json(self) -> dict[str, Any]:
        return {"unmentioned": self.missing, "numbers_not_found": self.absent, "contrast": self.opposed,
                "weak_evidence": self.weak}


@dataclass
class Verification:
    """Whether a written answer stands, and why not."""

    grounded: bool
    missing: list[str] = field(default_factory=list)  # numbers, names or code no cited passage holds
    margin: float | None = None  # the judge's margin for "the passages say this"
    unsupported: list[str] = field(default_factory=list)  # claims no sentence supports (no judge)
    copied: bool = False  # every sentence copied from a passage it cites: stands without the model's reading
    recited: str | None = None  # the answer with a citation moved to the passage holding its facts

    def to_json(self) -> dict[str, Any]:
        return {"grounded": self.grounded, "missing": self.missing, "unsupported": self.unsupported,
                "margin": None if self.margin is None else round(self.margin, 3), "copied": self.copied,
                "recited": self.recited is not None}


@dataclass
class Source:
    """One numbered reference: where passage [n] of the prompt came from."""

    n: int
    source: str
    page: int | None
    heading: str | None
    snippet: str
    rerank_score: float | None = None
    scope_score: float | None = None

    @classmethod
    def from_document(cls, n: int, doc: Document) -> "Source":
        meta = doc.metadata
        # as the passage reads: its sentences, markup reduced (no heading marks, badges or link addresses)
        text = " ".join(split_sentences(doc.page_content)) or " ".join(doc.page_content.split())
        snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " ..."
        return cls(n, str(meta.get("source", "?")), meta.get("page"), meta.get("heading") or None, snippet,
                   meta.get("rerank_score"), meta.get("scope_score"))

    def label(self) -> str:
        """`file.md, page 2, "Heading"`: the citation as people read it."""
        parts = [shown(self.source)]
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.heading:
            parts.append(f'"{self.heading}"')
        return ", ".join(parts)

    def to_json(self, full: bool = False) -> dict:
        data = asdict(self)
        return data if full else {key: data[key] for key in ("n", "source", "page", "heading")}


class RagChain(Runnable):
    """Input: a question, or `{"question": str, "history": [...]}` where history holds earlier turns as
    `{"role": "user"|"assistant", "content": str}` messages or `(question, answer)` pairs.

    `stream()` yields the typed events of `rag_bot.events` (their order is there); `invoke()` folds them
    with `Reply` into `{"question", "answer", "declined", "reason", "grounded", "evidence", "strength",
    "sources", "scope", "timings", "unmentioned", "judge", "rewritten", "rules", "verification"}`.
    """

    def __init__(self, retriever: RagRetriever, llm: ChatLLM, prompts: Prompts, chat: ChatConfig | None = None,
                 stop: list[str] | None = None, passages: int = 4, evidence: EvidenceFinder | None = None,
                 judge: AnswerJudgeModel | None = None) -> None:
        self.retriever = retriever
        self.judge = judge  # reads the question with its quotes: "the documents don't say" below chat.judge_level
        self.passages = passages
        self.llm = llm
        self.prompts = prompts
        self.chat = chat or ChatConfig()
        self.stop = stop or []
        self.evidence = evidence or EvidenceFinder(retriever.embeddings, grounding_level=self.chat.grounding_level,
                                                   clauses_below=self.chat.min_evidence,
                                                   quote_words=self.chat.quote_words, idf=keyword_rarity(retriever))
        self.last_prompt: tuple[str, str] | None = None  # (system, user) of the latest answer, for benchmarks

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return Reply.of(self.stream(input, config, **kwargs)).result()

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Event]:
        timings: dict[str, float] = {}
        yield from self._answer(input, timings, config)
        yield Finished(timings)

    def _answer(self, input: Any, timings: dict[str, float], config: RunnableConfig | None) -> Iterator[Event]:
        question, history = _read_input(input)
        start = time.perf_counter()
        asked = question
        leans = bool(history and self.chat.condense and self.chat.history_turns and depends_on_history(question))
        if leans:
            question = self.condense(question, history, config)
            timings["condense"] = _ms(start)
        retrieval = self.retriever.search(question, k=self.passages)
        if leans and retrieval.declined and not _told(retrieval):
            question, retrieval = self._in_conversation(question, asked, history, retrieval)
        yield Searched(question, question != asked)
        timings.update(retrieval.timings)
        second: tuple[str, list[Document], Evidence, float] | None = None
        if retrieval.declined and self._may_look_again(retrieval):
            with _timed(timings, "second_opinion"):
                retrieval, second = self.second_opinion(question, retrieval)
        if retrieval.declined or not retrieval.documents:
            yield from self._decline(question, retrieval)
            return
        mode = self.chat.answer_mode
        reads = mode != "extract" or self.judge is not None  # a model reads the passages
        if second is not None:
            context, used, evidence = second[0], second[1], second[2]
        else:
            with _timed(timings, "evidence"):
                context, used, evidence = self.read(question, retrieval.documents, reads)
        sources = [Source.from_document(n, doc) for n, doc in enumerate(used, 1)]
        with _timed(timings, "rules"):
            flags = self.rule_flags(question, used, evidence)
        # the passages and their best sentences are shown at once, while the model reads
        yield Found(sources, evidence.quotes, evidence.strength, flags.to_json())
        verdict = second[3] if second is not None else None
        if verdict is None and self.judge is not None and evidence.quotes and judged(question):
            with _timed(timings, "judge"):
                verdict = self.judge.margin(question, judge_text(evidence.quotes, sources))
        yield Judged(verdict)
        if not self._answerable(flags, verdict):
            yield Abstained(NOT_COVERED, flags.missing + flags.absent)
            yield Text(self.prompts.format("not_covered", question=question, why=flags.why(verdict is None)))
            yield Cited(evidence.quotes, evidence.strength)
            return
        if mode == "extract":
            yield Text(self.documents_say(question, evidence.quotes))
            yield Cited(evidence.quotes, evidence.strength, quoted=True)
            return
        yield from self._generate(question, context, used, evidence, timings, start, config)

    def _in_conversation(self, question: str, asked: str, history: list[tuple[str, str]], retrieval: Retrieval
                         ) -> tuple[str, Retrieval]:
        """A follow-up the gate declined as searched ("Why not just take the most similar passages?" after a question
        about how the search picks its passages): the last question and the follow-up searched together, kept when
        the gate lets them through, as the conversation is about the documents. The follow-up's own words are still
        checked for an instruction to the assistant."""
        both = _joined(self._last_asked(history), asked)
        if both == question:
            return question, retrieval
        again = self.retriever.search(both, k=self.passages)
        return (both, again) if not again.declined else (question, retrieval)

    def _may_look_again(self, retrieval: Retrieval) -> bool:
        """A question the gate declined on topic (not an instruction) gets the model's second opinion."""
        return (self.chat.second_opinion and self.judge is not None and retrieval.scope is not None
                and not _told(retrieval))

    def second_opinion(self, question: str, retrieval: Retrieval
                       ) -> tuple[Retrieval, tuple[str, list[Document], Evidence, float] | None]:
        """The gate declined: the model reads the passages the question would have got and lets it through
        when it finds the answer there with margin `chat.judge_level` + `SECOND_OPINION_BAR` ("How do I add my
        own documents?" over passages about ingesting a folder), or with the ordinary `chat.judge_level` when the
        collection holds every content word of the question (the retriever's lexical look: "what's bm25 for"). Returns the retrieval to go on with and, when
        let through, (context, passages, margin) for the judge step; the margin is kept in the scope either way."""
        opened = self.retriever.search(question, k=self.passages, gate=False)
        if not opened.documents or self.judge is None:
            return retrieval, None
        context, used, evidence = self.read(question, opened.documents)
        if not evidence.quotes:
            return retrieval, None
        sources = [Source.from_document(n, doc) for n, doc in enumerate(used, 1)]
        margin = self.judge.margin(question, judge_text(evidence.quotes, sources))
        if retrieval.scope is not None:
            retrieval.scope.second_opinion = margin
        if margin < self.chat.judge_level + (0.0 if _words_held(retrieval) else SECOND_OPINION_BAR):
            return retrieval, None
        return opened, (context, used, evidence, margin)

    def read(self, question: str, docs: list[Document], reads: bool = True) -> tuple[str, list[Document], Evidence]:
        """The passages' sentences scored for the question (the quotes), then what the model reads of them
        (`build_context`; nothing when no model reads) and the passages that holds."""
        evidence = self.evidence.find(question, [(n, doc.page_content) for n, doc in enumerate(docs, 1)])
        if not reads:
            return "", docs, evidence
        context, used = self.build_context(question, docs, evidence)
        if len(used) < len(docs):  # a passage left out: quote only what the model reads
            evidence = self.evidence.find(question, [(n, doc.page_content) for n, doc in enumerate(used, 1)])
        return context, used, evidence

    def rule_flags(self, question: str, used: list[Document], evidence: Evidence) -> Flags:
        """What the word rules notice about the question and the passages found: terms the documents never
        mention, numbers the passages never state, a contrast the quotes never make, weak evidence."""
        missing = self.unmentioned(question, used)
        absent = [] if missing else self.numbers_not_found(question, used)
        opposed = (contrast(question, [quote.text for quote in evidence.quotes])
                   if self.chat.check_contrasts and not (missing or absent) else None)
        return Flags(missing, absent, opposed, evidence.strength < self.chat.min_evidence)

    def _answerable(self, flags: Flags, verdict: float | None) -> bool:
        """The one decision: when the model read the passages (`verdict`), its margin decides and a rule that
        fired only raises the bar (`chat.judge_level` + `RULE_BAR`); a yes/no question goes to the writer and
        the verifier; with no model at all, any rule abstains."""
        if verdict is None and self.chat.answer_mode != "extract" and self.judge is not None:
            # a yes/no question the judge does not read: the writer answers it and the verifier checks the
            # answer; only a term the whole collection never mentions still abstains at once
            return not flags.missing
        if verdict is None:
            return not flags.any
        return verdict >= self.chat.judge_level + (RULE_BAR if flags.raise_bar else 0.0)

    def _reading(self, template: str, question: str, context: str, **values: str) -> list[dict[str, str]]:
        """The chat a model reads the passages in: the same system turn and the same passages and question
        first for the judge, the writer and the verifier, so that llama.cpp reuses what it has read."""
        user = self.prompts.format(template, context=context, question=_data(question), **values)
        return [{"role": "system", "content": self.prompts.format("system")}, {"role": "user", "content": user}]

    def warm_up(self) -> None:
        """Load now every model the first question needs, in the order it needs them: the retriever's
        (embedding model, store index, cross-encoder), the evidence step's, the judge, then the LLM (which
        `extract` mode uses only to condense follow-ups), so that the first question is answered as quickly as
        the next ones. `rag-bot chat` and `serve` do not call it yet (BENCHMARKS.md, session 19)."""
        self.retriever.warm_up()
        self.evidence.find("warm up", [(1, "This sentence warms up the evidence step.")])
        if self.judge is not None:
            self.judge.preload()
        self.llm.preload()

    def load_judge_in_background(self) -> None:
        """Start loading the judge on a thread of its own, so that its load overlaps the retriever's for a
        process that answers one question (a cold `rag-bot ask`: 8.8 s instead of 9.9 s on the 2-core test
        machine). The question waits for it only if it is not done by then; a load that fails fails again,
        with its one-line error, when the question needs the judge."""
        judge = self.judge
        if judge is None:
            return

        def load() -> None:
            try:
                judge.preload()
            except Exception as exc:  # reported by the question that needs it
                log.debug("the judge did not load in the background: %s", exc)

        # not a daemon: a process that exits while llama.cpp is still reading the model (a `rag-bot ask`
        # declined before the load ended) crashed at exit (SIGSEGV or SIGABRT); it waits for the load instead
        threading.Thread(target=load, name="rag-bot-judge-load", daemon=False).start()

    def unmentioned(self, question: str, used: list[Document]) -> list[str]:
        """The names, numbers and technical terms of the question ("Ollama", "1895", "int8") that no
        chunk of the collection holds (the keyword index knows all its words) and the passages found
        do not hold either, file names and headings included: the documents cannot answer a question
        about them."""
        terms = named_terms(question) if self.chat.check_terms else []
        if not terms:
            return []
        index = getattr(self.retriever, "bm25", None)
        if index is not None:
            terms = [term for term in terms if not _mentioned(index, term)]
        if not terms:
            return []
        from .bm25 import Bm25Index

        texts = _searchable(used)
        found = Bm25Index.build([str(n) for n in range(len(used))], texts)
        # a number written without its separators ("1307402" for "1,307,402") is found by its value
        return [term for term in terms if not _mentioned(found, term)
                and not (term.replace(",", "").isdigit() and not numbers_missing(term, texts))]

    def numbers_not_found(self, question: str, used: list[Document]) -> list[str]:
        """The numbers of the question that the passages found never state ("What city has a population of
        1,307,204?" over a passage that says 1,307,402): the keyword index splits numbers at their commas,
        so `unmentioned` cannot tell, and a number asked about is one the answer's passage must hold. A yes/no
        question ("Is 4 GB of disk enough?") is left alone: its number is compared, not looked up."""
        if not self.chat.check_terms or yes_no(question):
            return []
        return numbers_missing(question, _searchable(used))

    def _decline(self, question: str, retrieval: Retrieval) -> Iterator[Event]:
        if not retrieval.declined:
            yield Declined(NOTHING_FOUND)
            yield Text(self.prompts.format("nothing_found", question=question))
            return
        check = retrieval.scope
        yield Declined(OUT_OF_SCOPE, check.to_json() if check else None)
        # plain words in the chat; the scores and the closest passage are in `scope` (the sources panel, --json)
        told = check is not None and check.instruction and check.score >= check.threshold
        why = ("this reads as an instruction to me rather than a question about them" if told else
               "this question seems to be about something else")
        topics = "; ".join(check.about) if check and check.about else "the files in this collection"
        hint = ("Ask a question about what they cover (\"What ...?\", \"How do I ...?\")." if told else
                "Try asking about something they cover, or rephrase the question with their words.")
        yield Text(self.prompts.format("decline", question=question, why=why, topics=topics, hint=hint))

    def _generate(self, question: str, context: str, used: list[Document], evidence: Evidence, timings: dict,
                  start: float, config: RunnableConfig | None) -> Iterator[Event]:
        """Stream the LLM's answer, verify it against the passages it cites, and attach the evidence."""
        system, user = (turn["content"] for turn in self._reading("answer", question, context))
        self.last_prompt = (system, user)
        first, pieces = True, []
        # "The passage [1] states that X." streams as "X [1].", and a sentence citing nothing gets its passage
        for piece in with_citations(self.llm.stream(system, user, stop=self.stop, config=config),
                           [doc.page_content for doc in used]):
            if first:
                timings["first_token"], first = _ms(start), False
            pieces.append(piece)
            yield Text(piece)
        answer = "".join(pieces).strip()
        if not answer:  # a small model may stop at once: say so rather than show nothing
            yield Text(self.prompts.format("no_answer", question=question))
        if SAYS_NOT_COVERED.search(answer) and not _CITED.search(answer):  # the model itself found no answer
            yield Abstained(NOT_COVERED)
            yield Replaced(self.prompts.format("not_covered", question=question, why=""))
            yield Cited(evidence.quotes, evidence.strength)
            return
        with _timed(timings, "verify"):
            check = self.verify(question, context, answer, used, evidence)
        timings["answer"] = _ms(start)
        yield Verified(check)
        if check.grounded and check.recited is not None:  # the same answer, its citations moved where the facts are
            answer = check.recited
            yield Recited(answer)
        if check.grounded:
            cited = {int(n) for n in _CITED.findall(answer) if 1 <= int(n) <= len(used)}
            quotes = self.evidence.quotes(evidence, answer, only=cited or None) or evidence.quotes
        else:
            quotes = evidence.quotes
            if self.chat.answer_mode == "auto":
                yield Replaced(self.prompts.format("unsupported", question=question, quotes=_quote_lines(quotes)))
        yield Cited(quotes, evidence.strength, quoted=not check.grounded and self.chat.answer_mode == "auto")

    def verify(self, question: str, context: str, answer: str, used: list[Document], evidence: Evidence | None
               ) -> Verification:
        """Does the written answer stand? Every number, name and code token in it must be in a passage it
        cites (any passage found, when it cites none; a name may also come from the question; a citation of a
        passage without them moves to the one holding them: `recited`), and the judge must read it as said by
        the passages (`chat.verify_level`), unless it is copied from the passages it cites (`copied`: a quote
        needs no reading). Without a judge, the similarity check of `EvidenceFinder.grounding`."""
        if not self.chat.verify:
            return Verification(True)
        missing = self._facts_missing(question, answer, used)
        if missing and _CITED.search(answer):  # a wrong number ("[3]" for what [2] says): cite the passage saying it
            moved = recited(answer, _searchable(used))
            if moved != answer and not self._facts_missing(question, moved, used):
                return replace(self._read(question, context, moved, used, evidence), recited=moved)
        if missing:
            return Verification(False, missing=missing)
        return self._read(question, context, answer, used, evidence)

    def _facts_missing(self, question: str, answer: str, used: list[Document]) -> list[str]:
        """The numbers, names and code of `answer` that the passages it cites (all, when it cites none) do not
        hold or state of something else."""
        texts = _cited_texts(answer, used)
        # names the question itself uses ("the base Transformer") are the question's, not the answer's claims
        written = without_list_numbers(_CITED.sub("", answer))
        missing = [fact for fact in facts_missing(written, texts)
                   if fact.lower() not in question.lower() or fact.replace(",", "").isdigit()]
        missing += [f"{number} (the passages state it of something else)" for number in numbers_out_of_place(written, texts)
                    if number not in missing]
        return missing

    def _read(self, question: str, context: str, answer: str, used: list[Document], evidence: Evidence | None
              ) -> Verification:
        """An answer whose facts its passages hold: it stands when copied from the passages it cites, else when
        the judge reads it as said by the passages (without a judge, the similarity check of
        `EvidenceFinder.grounding`)."""
        written = without_list_numbers(_CITED.sub("", answer))
        if copied(written, _cited_texts(answer, used)):  # a quote of its passages:
            return Verification(True, copied=True)  # the fallback would show the same words
        if self.judge is None:
            if evidence is None:
                raise ValueError("verifying without a judge needs the question's evidence")
            grounding = self.evidence.grounding(answer, evidence, [doc.page_content for doc in used])
            return Verification(grounding.grounded, unsupported=list(grounding.unsupported))
        margin = self.judge.score(self._reading("verify", question, context, answer=_data(answer)))
        return Verification(margin >= self.chat.verify_level, margin=margin)

    def documents_say(self, question: str, quotes: list[Quote]) -> str:
        """The reply made of quotes alone: "The documents say:" and each quote with its reference."""
        return self.prompts.format("documents_say", question=question, quotes=_quote_lines(quotes))

    def condense(self, question: str, history: list[tuple[str, str]], config: RunnableConfig | None = None) -> str:
        """The follow-up rewritten as a standalone question; the question itself if the LLM gives nothing
        usable. A rewrite that lost a word the follow-up asks about ("What about telemetry?" -> "What does
        rag-bot send?"), still points back ("... more than that ...") or brings in a word nobody said
        ("Does the cache keep the page numbers?" after a talk about PDFs), and a follow-up that says it leans
        on the last question but came back unchanged ("And --rebuild?"), give way to the last question and
        the follow-up together, which keep every word."""
        rewritten = self._rewrite(question, history, config)
        unchanged = _plain(rewritten) == _plain(question)
        if unchanged:  # "And --rebuild?" back as it was
            return _joined(self._last_asked(history), question) if points_back(question) else question
        conversation = " ".join(f"{asked} {answered}" for asked, answered in history[-self.chat.history_turns:])
        if (words_left_out(question, rewritten) or still_points_back(question, rewritten)
                or words_made_up(rewritten, f"{conversation} {question}")):
            return _joined(self._last_asked(history), question)
        return rewritten

    def _last_asked(self, history: list[tuple[str, str]]) -> str:
        """The last question as it was searched when it leaned on the one before ("Does rag-bot send my documents
        anywhere? What about telemetry?" before "And crash reports?"): the last question, and the ones before it
        for as long as each points back, within `chat.history_turns`."""
        asked = [question for question, _ in history[-self.chat.history_turns:]]
        kept = [asked.pop()]
        while asked and points_back(kept[0]):
            kept.insert(0, asked.pop())
        return " ".join(_sentence(question) for question in kept)

    def _rewrite(self, question: str, history: list[tuple[str, str]], config: RunnableConfig | None) -> str:
        """The model's standalone form of the follow-up (`condense.txt`), or the question itself. Greedy
        (temperature 0): a rewrite is not prose, and the same conversation should be searched the same way."""
        turns = history[-self.chat.history_turns:]
        lines = []
        for asked, answered in turns:
            lines.append(f"User: {asked}")
            if answered:
                lines.append(f"Assistant: {_clip(answered, 400)}")
        user = self.prompts.format("condense", history="\n".join(lines), question=question)
        text = "".join(self.llm.stream("", user, max_tokens=64, stop=["\n"], config=config, temperature=0.0))
        rewritten = text.strip().strip('"').strip()
        return rewritten if 3 <= len(rewritten) <= 400 else question

    def build_context(self, question: str, docs: list[Document], evidence: Evidence | None = None) -> tuple[str, list[Document]]:
        """The passages the model reads, best first, within `chat.context_tokens` (and `n_ctx` beside the
        prompt and the answer). With the question's `evidence`, each passage longer than its share of the
        budget is read as an excerpt of its best sentences (in their order, gaps marked "..."), so that the
        model sees the best part of every passage; without, as many whole passages as fit, the last cut short."""
        count = self._token_counter()
        fixed = count(self.prompts.format("system") + "\n\n" + self.prompts.format("answer", context="", question=_data(question)))
        room = self.llm.n_ctx - self.llm.max_tokens - fixed - TEMPLATE_RESERVE
        if room < MIN_PASSAGE_TOKENS:
            raise ConfigError(f"llm.n_ctx: {self.llm.n_ctx} tokens leave no room for passages beside the question "
                              f"and the answer (llm.max_tokens {self.llm.max_tokens}); shorten the question "
                              "or raise llm.n_ctx")
        budget = min(room, self.chat.context_tokens)
        blocks: list[str] = []
        used: list[Document] = []
        scores = sentence_scores(evidence, self.chat.quote_words) if evidence is not None else {}
        share = max(MIN_PASSAGE_TOKENS, budget // max(1, len(docs)) - PASSAGE_MARKUP_TOKENS)
        for n, doc in enumerate(self.defused(docs), 1):
            text = excerpt(doc.page_content, n, scores, share, count) if scores else doc.page_content
            block = _passage(len(used) + 1, doc, text)
            cost = count(block) + 2  # the blank line between passages
            if cost > budget:
                trimmed = self._trim(len(used) + 1, doc, budget - 2, count)
                if trimmed is not None:
                    blocks.append(trimmed)
                    used.append(doc)
                break
            blocks.append(block)
            used.append(doc)
            budget -= cost
        return "\n\n".join(blocks), used or docs[:1]

    def _token_counter(self) -> Callable[[str], int]:
        """The LLM's own token count; in extract mode (the LLM may never load) an estimate of four
        characters a token."""
        if self.chat.answer_mode == "extract" and not getattr(self.llm, "loaded", True):
            return lambda text: len(text) // 4 + 1
        return self.llm.count_tokens

    def defused(self, docs: list[Document]) -> list[Document]:
        """The passages as the LLM reads them: a sentence that the collection's injection check takes for
        an instruction to the assistant is left out (`injections.defuse_passages`)."""
        from .filter import SENTENCE_INJECTION_LEVEL

        texts = [doc.page_content for doc in docs]
        defused = defuse_passages(texts, getattr(self.retriever, "scope", None), self.retriever.embeddings,
                                  SENTENCE_INJECTION_LEVEL)
        return [doc if new == old else Document(new, id=doc.id, metadata=doc.metadata)
                for doc, old, new in zip(docs, texts, defused)]

    def _trim(self, n: int, doc: Document, budget: int, count: Callable[[str], int]) -> str | None:
        """The passage cut to the longest prefix that fits in `budget` tokens, or None if too little fits."""
        if budget < MIN_PASSAGE_TOKENS:
            return None
        text = doc.page_content
        low, high = 0, len(text)
        while low < high:  # longest prefix (in characters) whose block fits
            mid = (low + high + 1) // 2
            if count(_passage(n, doc, text[:mid] + " ...")) <= budget:
                low = mid
            else:
                high = mid - 1
        if low == 0:
            return None
        block = _passage(n, doc, text[:low] + " ...")
        return block if count(block) >= MIN_PASSAGE_TOKENS else None


def load_chain(config: str | Config | None = None, *, retriever: RagRetriever | None = None, llm: ChatLLM | None = None,
               prompts: Prompts | None = None, judge: AnswerJudgeModel | None | Literal["config"] = "config") -> RagChain:
    """The chat chain over the ingested collection. Prompts are checked now; the models load on the
    first question (or call `chain.warm_up()`). `llm` and `judge` may be shared by several chains
    (the default judge: `load_judge(config)`)."""
    from .retriever import load_retriever

    config = config if isinstance(config, Config) else load_config(config)
    prompts = prompts or load_prompts(prompts_dir(config))
    retriever = retriever or load_retriever(config)
    llm = llm or load_llm(config)
    evidence = EvidenceFinder(retriever.embeddings, retriever.reranker, config.chat.grounding_level,
                              clauses_below=config.chat.min_evidence, quote_words=config.chat.quote_words,
                              idf=keyword_rarity(retriever))
    return RagChain(retriever, llm, prompts, config.chat, stop=config.llm.stop, passages=config.reranker.top_n,
                    evidence=evidence, judge=load_judge(config, llm) if judge == "config" else judge)


def load_judge(config: Config, llm: ChatLLM | None = None) -> AnswerJudgeModel | None:
    """The answer judge of `chat.judge_model` (its GGUF found, or assembled now into the machine's shared model
    cache, `llm.shared_models_dir()`; loaded on first use), or None. When it names the same model as
    `llm.model_path` (the default), the judge reads with `llm`'s own model: one copy in memory."""
    if not config.chat.judge_model:
        return None
    from .judge import AnswerJudge
    from .llm import LlamaCppLLM, gguf_file, repair_hint, shared_models_dir

    path = gguf_file(config.chat.judge_model, shared_models_dir(), "chat.judge_model")
    hint = repair_hint(config.chat.judge_model, path)
    shared = (llm if isinstance(llm, LlamaCppLLM) and config.chat.judge_model == config.llm.model_path else None)
    return AnswerJudge(path, threads=config.llm.threads, hint=hint, shared=shared)


def judge_text(quotes: list[Quote], sources: list[Source]) -> str:
    """What the judge reads: each quote after the file and heading of its passage, as cited ('(rich.md,
    "Rich > Emoji") To insert an emoji ...'). A quote alone lacks what its heading says ("How do I put an
    emoji in Rich output?" over a sentence that never says "Rich" got "No"): with them, 7 of the 122
    hand-written `examples/docs` questions the docs answer get "the documents don't say" instead of 12,
    and SQuAD's answerable and unanswerable questions stay as far apart (ROC AUC 0.773 against 0.766,
    bench/judge_prompts.py; BENCHMARKS.md, session 18)."""
    return " ".join(f"({sources[quote.n - 1].label()}) {quote.text}" for quote in quotes)


def keyword_rarity(retriever: Any) -> Callable[[str], float]:
    """A word's rarity in the collection, read from the retriever's keyword index at call time (ingest may
    swap the index); 1 for every word when there is none (`retriever.hybrid: false`)."""
    def idf(token: str) -> float:
        index = getattr(retriever, "bm25", None)
        return index.idf(token) if index is not None else 1.0
    return idf


def _mentioned(index: KeywordIndex, term: str) -> bool:
    """Does the keyword index hold `term`: its stemmed words, and its words as written when the index
    knows them ("Excel" is not "excellent", though both stem to "excel")?"""
    return index.mentions(term) and index.mentions_word(term) is not False


def _told(retrieval: Retrieval) -> bool:
    """Did the gate take the message for an instruction to the assistant (not merely off the documents' topic)?"""
    check = retrieval.scope
    return check is not None and check.instruction


def _words_held(retrieval: Retrieval) -> bool:
    """Does the collection hold every content word of the question the gate declined (`ScopeCheck.words_held`)?"""
    check = retrieval.scope
    return check is not None and bool(check.words_held)


def _searchable(used: list[Document]) -> list[str]:
    """The passages' text with their file name and heading, as the term checks read them."""
    return [f"{doc.metadata.get('source', '')} {doc.metadata.get('heading') or ''}\n{doc.page_content}" for doc in used]


def _cited_texts(answer: str, used: list[Document]) -> list[str]:
    """The searchable texts of the passages `answer` cites; of all passages read when it cites none."""
    cited = sorted({int(n) for n in _CITED.findall(answer) if 1 <= int(n) <= len(used)})
    return _searchable([used[n - 1] for n in cited] if cited else used)


def _listed(terms: list[str]) -> str:
    """'"a"', '"a" or "b"', '"a", "b" or "c"'."""
    quoted = [f'"{term}"' for term in terms]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def sentence_scores(evidence: Evidence, quote_words: float) -> dict[tuple[int, str], float]:
    """(passage number, sentence) -> how well it answers the question: its cosine plus `quote_words` times
    its share of the question's words, as the quotes are chosen."""
    overlap = evidence.overlap if len(evidence.overlap) == len(evidence.sentences) else [0.0] * len(evidence.sentences)
    return {key: similarity + quote_words * words
            for key, similarity, words in zip(evidence.sentences, evidence.similarities, overlap)}


def excerpt(text: str, n: int, scores: dict[tuple[int, str], float], budget: int, count: Callable[[str], int]) -> str:
    """Passage `n` as the model reads it within `budget` tokens: whole when it fits, else its best sentences
    (by `scores`) in their own order, a gap between them marked "..."."""
    if count(text) <= budget:
        return text
    sentences = split_sentences(text)
    order = sorted(range(len(sentences)), key=lambda i: -scores.get((n, sentences[i]), -1.0))
    kept: set[int] = set()
    used = 0
    for i in order:
        cost = count(sentences[i]) + 1
        if used + cost > budget:
            continue
        kept.add(i)
        used += cost
    parts: list[str] = []
    for i in sorted(kept):
        if parts and i - 1 not in kept:
            parts.append("...")
        parts.append(sentences[i])
    if not parts:
        return text
    return ("... " if min(kept) > 0 else "") + " ".join(parts) + (" ..." if max(kept) < len(sentences) - 1 else "")


def _quote_lines(quotes: list[Quote]) -> str:
    return "\n".join(f'"{quote.text}" [{quote.n}]' for quote in quotes)


def _passage(n: int, doc: Document, text: str) -> str:
    """One passage of the answer prompt, marked as data (see prompts/system.txt); a tag inside the
    document's text cannot close it early. The model reads its number and its text under its own heading,
    not its file name: given "[1] getting-started.md, "Requirements"", a small model wrote "getting-started.md
    requires ..." and '"Requirements" require ...' (the sources panel names the file)."""
    text = text.strip()
    heading = str(doc.metadata.get("heading") or "").split(" > ")[-1].strip()
    if heading and not text.startswith("#"):
        text = f"## {heading}\n{text}"
    return f"<passage>\n[{n}]\n{_data(text)}\n</passage>"


_TAG = re.compile(r"<(/?)(passage|question)\b", re.IGNORECASE)


def _data(text: str) -> str:
    """Text from a document or the user with the prompt's own tags defused (`<passage` -> `< passage`)."""
    return _TAG.sub(r"< \1\2", text)


def _read_input(input: Any) -> tuple[str, list[tuple[str, str]]]:
    history: list
    if isinstance(input, str):
        question, history = input, []
    elif isinstance(input, dict) and isinstance(input.get("question"), str):
        question, history = input["question"], input.get("history") or []
    else:
        raise TypeError("the chain takes a question, or {'question': str, 'history': [...]}")
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    return question, _pairs(history)


def _pairs(history: list) -> list[tuple[str, str]]:
    """Earlier turns as (question, answer) pairs, from messages or pairs."""
    pairs: list[tuple[str, str]] = []
    for item in history:
        if isinstance(item, dict):
            content = message_text(item.get("content"))
            if item.get("role") == "user":
                pairs.append((content, ""))
            elif item.get("role") == "assistant" and pairs:
                asked, answered = pairs[-1]
                pairs[-1] = (asked, (answered + "\n" + content).strip())
        else:
            asked, answered = item
            pairs.append((message_text(asked), message_text(answered)))
    return [(asked, answered) for asked, answered in pairs if asked]


def message_text(content: Any) -> str:
    """The text of a chat message's content (Gradio may give a list of parts)."""
    if isinstance(content, list):  # Gradio message content may be a list of parts
        return " ".join(message_text(part.get("text", "") if isinstance(part, dict) else part) for part in content)
    return str(content or "")


def _plain(text: str) -> str:
    """A question without case, spacing and punctuation, to tell a rewrite that changed nothing."""
    return " ".join(re.findall(r"\w+", text.lower()))


def _joined(last: str, question: str) -> str:
    """The last question and the follow-up as one search: "Which formats can it read? And scanned ones?"."""
    return f"{_sentence(last)} {question.strip()}" if last.strip() else question


def _sentence(text: str) -> str:
    """`text` ending as a sentence ends (a full stop added when it has no closing mark)."""
    text = text.strip()
    return text if not text or text[-1] in ".?!" else text + "."


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


class _timed:
    """`with _timed(timings, "stage"):` records the stage's milliseconds."""

    def __init__(self, timings: dict[str, float], stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.stage] = _ms(self.start)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
