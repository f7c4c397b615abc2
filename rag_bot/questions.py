"""Questions generated from the collection's own chunks, without an LLM.

The scope gate must learn and be calibrated on what people ask (questions about the documents'
topics), not on the documents' sentences, or it learns the *form* of a question instead of its
topic. Templates over headings, document titles, key phrases and simple sentence patterns give
question-shaped, on-topic examples for any collection, in any number, in a second.

    questions = corpus_questions(chunks, count=600)
    questions[0].text, questions[0].chunk_id   # "How does incremental ingest work?", the chunk it came from
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Iterable, Sequence

# Common English function words, kept out of key phrases (no library call: this list is the rule).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either else ever every few for from
further had has have having he her here hers herself him himself his how i if in into is it its itself
just may me might more most much must my myself no nor not now of off on once one only or other our
ours ourselves out over own per same shall she should so some such than that the their theirs them
themselves then there these they this those through thus to too under until up upon us use used using
very via was we were what when where whether which while who whom whose why will with within without
would yet you your yours yourself yourselves e g eg ie etc
""".split())

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.'+-]*[A-Za-z0-9]|[A-Za-z]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*[-*#])")
_COPULA = re.compile(r"^(?:The |A |An )?([A-Za-z][\w'-]*(?: [\w'-]+){0,4}?) (is|are|was|were) (?!not\b)(.{8,})$")
_CAN = re.compile(r"^(?:You|Users?) can ([a-z][\w'-]*(?: [\w'.-]+){1,7})")
_NUMBER = re.compile(r"\b\d[\d,.]*\s+([a-z]{3,}s)\b")
_GENERIC_HEADINGS = frozenset({"introduction", "overview", "summary", "conclusion", "conclusions", "abstract",
                               "references", "contents", "notes", "background", "discussion", "results",
                               "methods", "appendix", "acknowledgements", "acknowledgments", "index"})

PHRASE_TEMPLATES = (
    "What is {p}?", "How does {p} work?", "What does {p} mean?", "Why does {p} matter?",
    "Can you explain {p}?", "What do the documents say about {p}?", "How is {p} used?",
    "Tell me about {p}.", "What should I know about {p}?", "Where does {p} come from?",
)
PAIR_TEMPLATES = ("How does {p} relate to {q}?", "What is the link between {p} and {q}?",
                  "Does {p} affect {q}?")
HEADING_TEMPLATES = ("What is {p}?", "How does {p} work?", "Tell me about {p}.",
                     "What do the documents say about {p}?", "Can you explain {p}?")


@dataclass(frozen=True)
class GeneratedQuestion:
    """A question and the chunk it was made from."""

    text: str
    chunk_id: str
    kind: str  # heading, title, phrase, pair, copula, can, number


@dataclass(frozen=True)
class CorpusChunk:
    """What the generator reads of a chunk: id, text, and its `source` and `heading` metadata."""

    id: str
    text: str
    source: str = ""
    heading: str = ""


_YES_NO = re.compile(r"\s*(?:is|are|was|were|do|does|did|can|could|will|would|should|has|have|had|may|must|"
                     r"isn't|aren't|doesn't|don't|can't|won't)\b", re.IGNORECASE)


# words that point back into a conversation ("How do I turn it off?", "Can I delete them?")
_REFERS_BACK = re.compile(r"\b(?:it|its|it's|itself|this|that|these|those|they|them|their|theirs|he|him|his|she|her|"
                          r"hers|one|ones|same|former|latter|else|instead|above|previous)\b", re.IGNORECASE)
# openings that continue the last question ("What about ...?", "And for PDFs?", "Why?")
_CONTINUES = re.compile(r"\s*(?:and|but|or|so|also|then|what about|how about|what if|why|why not|how come|"
                        r"which one|more|any other|anything else)\b", re.IGNORECASE)
# "What exit code do I get then?", "What do I put there?" ("Is there ...?" stands alone)
_AFTER_THAT = re.compile(r"\b(?:then|(?<!is )(?<!are )there)\b", re.IGNORECASE)
# a fragment that carries on the last question from a preposition ("On what kind of data?", "For roughly how many
# docs?"): what it is about was said before
_FRAGMENT = re.compile(r"\s*(?:on|for|in|at|with|by|from|to|into|about|under|over|without|after|before)"
                       r"(?:\s+\w+)?\s+(?:what|which|how|who|whom|when|where|whose)\b", re.IGNORECASE)
# words whose reach the conversation sets ("Do I have to delete everything?"): the model is asked, but a question
# it sends back unchanged stands as it is
_VAGUE = re.compile(r"\b(?:everything|anything|nothing|all of them|both|either|neither)\b", re.IGNORECASE)
_STANDS_ALONE_WORDS = 5
# words a follow-up asks with rather than about: a rewrite may drop them ("do I get" -> "does it give")
_ASKING_WORDS = frozenset("""
get gets got make makes need needs want wants tell know happen happens mean means say says work works
way ways thing things lot kind sort exactly actually really just still even else ok okay please go goes
""".split())


def depends_on_history(question: str) -> bool:
    """Whether a question may need the conversation to be understood: it points back ("it", "that",
    "they"), continues the last question ("What about ...?", "And ...?", "On what kind of data?"), is too short
    to stand alone, or says "everything" or "both", whose reach the conversation sets.
    Only such a question is rewritten by the model; the rest skip the call."""
    words = re.findall(r"[\w'-]+", question)
    names = any(word[:1].isupper() or re.search(r"\w[._]\w|\d", word) for word in words[1:])
    return (len(words) < _STANDS_ALONE_WORDS and not names or points_back(question)
            or _VAGUE.search(question) is not None)


def words_left_out(question: str, rewrite: str) -> list[str]:
    """The words a follow-up asks about that its rewrite lost ("telemetry" when "What about telemetry?"
    came back as "What does rag-bot send?"): content words, matched by stem, leaving aside the words that
    point back ("it", "that") and the ones it asks with ("get", "need")."""
    return _words_not_in(question, rewrite)


def points_back(question: str) -> bool:
    """Whether a question says outright that it leans on the last one: "it", "that", "And ...?", "What
    if ...?", "For how many ...?", "... then?" (a question that is merely short may stand alone: "What is MMR?")."""
    return bool(_REFERS_BACK.search(question) or _CONTINUES.match(question) or _FRAGMENT.match(question)
                or _AFTER_THAT.search(question))


def still_points_back(question: str, rewrite: str) -> bool:
    """Whether the rewrite kept a word by which the follow-up pointed back ("And if I have way more than
    that?" -> "If you have way more than that, how can I handle it?"; "... stop then?"): it does not
    stand alone yet."""
    def pointers(text: str) -> set[str]:
        return {word.lower() for word in _REFERS_BACK.findall(text) + _AFTER_THAT.findall(text)}

    return bool(pointers(question) & pointers(rewrite))


def words_made_up(rewrite: str, conversation: str) -> list[str]:
    """The content words of a rewrite that neither the follow-up nor the conversation before it used
    ("cache" in "Does the cache keep the page numbers?" after a talk about PDFs): the model took them
    from elsewhere, such as its prompt's examples."""
    return _words_not_in(rewrite, conversation)


def _words_not_in(text: str, other: str) -> list[str]:
    """The content words of `text` (not pointing back, not asking words) that `other` lacks, by stem."""
    stem = english_stem()
    said = {form for w in _WORD.findall(other) for form in (w.lower(), stem(w.lower()))}
    return [word for word in _WORD.findall(text)
            if len(word) > 2 and word.lower() not in STOPWORDS and word.lower() not in _ASKING_WORDS
            and not _REFERS_BACK.fullmatch(word) and word.lower() not in said and stem(word.lower()) not in said]


@cache
def english_stem() -> Callable[[str], str]:
    """The Snowball English stemmer the keyword index uses ("heads" -> "head")."""
    import Stemmer

    return Stemmer.Stemmer("english").stemWord


def yes_no(question: str) -> bool:
    """Whether a question asks yes or no ("Is 4 GB enough?", "Doesn't it run offline?") by its first word."""
    return _YES_NO.match(question) is not None


def corpus_chunks(stored: Iterable[Any]) -> list[CorpusChunk]:
    """The generator's view of stored chunks (anything with `id`, `text` and `metadata`)."""
    return [CorpusChunk(chunk.id, chunk.text, str(chunk.metadata.get("source") or ""),
                        str(chunk.metadata.get("heading") or "")) for chunk in stored]


def corpus_questions(chunks: Sequence[CorpusChunk], count: int = 600, seed: int = 0) -> list[GeneratedQuestion]:
    """About `count` distinct questions spread over the chunks (at most a few per chunk)."""
    rng = random.Random(seed)
    idf = _idf([chunk.text for chunk in chunks])
    order = list(chunks)
    rng.shuffle(order)
    per_chunk = max(1, min(4, math.ceil(count / max(1, len(order)))))
    seen: set[str] = set()
    questions: list[GeneratedQuestion] = []
    titled: set[str] = set()
    for chunk in order:
        made = _chunk_questions(chunk, idf, rng)
        if chunk.source and chunk.source not in titled:
            titled.add(chunk.source)
            made.insert(0, GeneratedQuestion(_title_question(chunk.source, rng), chunk.id, "title"))
        rng.shuffle(made)
        for question in made[:per_chunk]:
            key = question.text.lower()
            if key not in seen and 3 <= len(question.text.split()) <= 30:
                seen.add(key)
                questions.append(question)
        if len(questions) >= count:
            break
    return questions[:count]


def corpus_phrases(chunks: Sequence[CorpusChunk], count: int = 300, seed: int = 0) -> list[str]:
    """Up to `count` distinct topics of the collection: its headings and its chunks' key phrases."""
    rng = random.Random(seed)
    idf = _idf([chunk.text for chunk in chunks])
    order = list(chunks)
    rng.shuffle(order)
    phrases: dict[str, None] = {}
    for chunk in order:
        heading = _clean(chunk.heading.split(" > ")[-1]) if chunk.heading else ""
        if heading and heading.lower() not in _GENERIC_HEADINGS and 1 <= len(heading.split()) <= 8:
            phrases.setdefault(_lower_first(heading), None)
        for phrase in key_phrases(chunk.text, idf, 2):
            phrases.setdefault(phrase, None)
        if len(phrases) >= count:
            break
    return list(phrases)[:count]


def _chunk_questions(chunk: CorpusChunk, idf: dict[str, float], rng: random.Random) -> list[GeneratedQuestion]:
    made: list[GeneratedQuestion] = []
    for part in (chunk.heading.split(" > ") if chunk.heading else [])[-1:]:
        heading = _clean(part)
        if part.strip().endswith("?") and 3 <= len(heading.split()) <= 20:
            made.append(GeneratedQuestion(part.strip(), chunk.id, "heading"))  # already a question (an FAQ)
        elif heading and heading.lower() not in _GENERIC_HEADINGS and 1 <= len(heading.split()) <= 8:
            made.append(GeneratedQuestion(rng.choice(HEADING_TEMPLATES).format(p=_lower_first(heading)),
                                          chunk.id, "heading"))
    phrases = key_phrases(chunk.text, idf, 3)
    for phrase in phrases[:2]:
        made.append(GeneratedQuestion(rng.choice(PHRASE_TEMPLATES).format(p=phrase), chunk.id, "phrase"))
    if len(phrases) >= 2:
        made.append(GeneratedQuestion(rng.choice(PAIR_TEMPLATES).format(p=phrases[0], q=phrases[1]), chunk.id, "pair"))
    made.extend(_sentence_questions(chunk, rng))
    return made


def _sentence_questions(chunk: CorpusChunk, rng: random.Random) -> list[GeneratedQuestion]:
    """Simple rewrites of declarative sentences: "X is Y" -> "What is X?", "You can Z" -> "How can I Z?"."""
    made = []
    sentences = [" ".join(s.split()).strip(" #*-") for s in _SENTENCE.split(chunk.text)]
    sentences = [s for s in sentences if 5 <= len(s.split()) <= 45]
    rng.shuffle(sentences)
    for sentence in sentences[:6]:
        copula = _COPULA.match(sentence)
        if copula and copula.group(1).split()[0].lower() not in STOPWORDS:
            subject = _lower_first(copula.group(1))
            wh = "Who" if copula.group(1)[0].isupper() and copula.group(2) in ("was", "were") else "What"
            made.append(GeneratedQuestion(f"{wh} {copula.group(2)} {subject}?", chunk.id, "copula"))
        can = _CAN.match(sentence)
        if can:
            made.append(GeneratedQuestion(f"How can I {can.group(1).rstrip('.,;:')}?", chunk.id, "can"))
        number = _NUMBER.search(sentence)
        if number:
            words = [w for w in _words(sentence) if w.lower() not in STOPWORDS and w != number.group(1)]
            if words:
                made.append(GeneratedQuestion(f"How many {number.group(1)} does {' '.join(words[:3])} involve?",
                                              chunk.id, "number"))
        if len(made) >= 3:
            break
    return made


def key_phrases(text: str, idf: dict[str, float], most: int = 3) -> list[str]:
    """The chunk's most distinctive runs of one to three content words (tf-idf), best first."""
    words = _words(text)
    scores: dict[str, float] = {}
    shown: dict[str, str] = {}
    for size in (1, 2, 3):
        for start in range(len(words) - size + 1):
            run = words[start:start + size]
            lowered = [w.lower() for w in run]
            if lowered[0] in STOPWORDS or lowered[-1] in STOPWORDS or any(len(w) < 3 for w in lowered):
                continue
            if any(w in STOPWORDS for w in lowered) or (size == 1 and not _distinctive(run[0])):
                continue  # a lone common word ("state") makes a question about nothing in particular
            key = " ".join(lowered)
            scores[key] = scores.get(key, 0.0) + sum(idf.get(w, 0.0) for w in lowered) / (1.0 + 0.3 * (size - 1))
            shown.setdefault(key, " ".join(run))
    chosen: list[str] = []
    for key, _ in sorted(scores.items(), key=lambda item: item[1], reverse=True):  # ties: first seen first
        if any(key in other or other in key for other in chosen):
            continue  # no phrase inside another
        chosen.append(key)
        if len(chosen) >= most:
            break
    return [_lower_first(shown[key]) for key in chosen]


def _distinctive(word: str) -> bool:
    """A word that can stand alone as a topic: a name, an acronym, or a technical token."""
    return word[:1].isupper() or any(not c.isalpha() for c in word) or word.upper() == word


def _idf(texts: Sequence[str]) -> dict[str, float]:
    frequency: Counter[str] = Counter()
    for text in texts:
        frequency.update({w.lower() for w in _words(text)})
    total = max(1, len(texts))
    return {word: math.log((1 + total) / (1 + count)) + 1.0 for word, count in frequency.items()}


def _title_question(source: str, rng: random.Random) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", source.rsplit("/", 1)[-1])
    title = _clean(re.sub(r"[_-]+", " ", stem)) or stem
    return rng.choice(("What is {p} about?", "What does {p} cover?", "Summarise {p}.")).format(p=_lower_first(title))


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _clean(text: str) -> str:
    return " ".join(re.sub(r"[`*_#\[\]()\"]", " ", text).split()).strip(" ?.:!")


def _lower_first(text: str) -> str:
    """Lower-case a capitalised first word ("Data folder" -> "data folder"); names and acronyms stay."""
    first = text.split(" ", 1)[0]
    if len(first) > 1 and first[0].isupper() and first[1:].islower() and " " in text:
        return first.lower() + text[len(first):]
    return text
