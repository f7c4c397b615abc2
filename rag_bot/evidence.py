"""Evidence for an answer, without an LLM: the sentences of the passages that best support it, the
check that a generated answer is grounded in the passages, and the "the documents don't say" rule.

Sentences are scored against the question (and a grounded answer) by cosine similarity of the
embedding model, or, when a cross-encoder is loaded, ordered by the cross-encoder. The abstain rule
always uses the cosine, because its level (`chat.min_evidence`) was calibrated with it on the
SQuAD 2.0 unanswerable questions (`rag-bot eval answers`).

    finder = EvidenceFinder(embeddings)
    found = finder.find("Where is the data kept?", [(1, passage_text)])
    found.strength, found.quotes[0].text          # 0.71, "Everything rag-bot stores goes into ..."
    finder.grounding("It is kept in .rag_bot [1].", found).grounded
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Sequence

from .protocols import CrossEncoderModel, Embedder
from .questions import STOPWORDS, english_stem

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9`])|\n\s*\n|\n(?=\s*(?:[-*#]|\d+\.)\s)")
_HEADING_LINE = re.compile(r"(?m)^ {0,3}#{1,6}[ \t].*$")  # a markdown heading is a title, not a sentence to quote
# a short line with no end punctuation, followed by a capitalised line: a title (as PDF pages have)
_TITLE_LINE = re.compile(r"(?m)^((?:[^\s.!?:;,]+[ \t]+){0,7}[^\s.!?:;,]+)[ \t]*\n(?=[A-Z])")
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*\b")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.'-]*[A-Za-z0-9]|[A-Za-z0-9]")
# a technical term: letters and digits mixed (int8, GPT-4, MPEG-3, 1600s) or a capital inside a word (macOS)
_TECHNICAL = re.compile(r"\b[\w.-]*(?:\d[\w.-]*[A-Za-z]|[A-Za-z][\w.-]*\d)[\w.-]*\b|\b[a-z]+[A-Z]\w*\b")
MAX_QUOTES = 3
QUOTE_MARGIN = 0.15  # a second or third quote must score within this of the best
MIN_SENTENCE_WORDS = 4
MIN_CLAUSE_WORDS = 3
# where a sentence splits into clauses: commas, semicolons, colons, brackets, dashes between words
_CLAUSE_BREAK = re.compile(r"\s*[,;:()]\s*|\s+--?\s+")
RELEVANT_SENTENCES = 5  # a generated claim must be supported by one of the question's best sentences


@dataclass(frozen=True)
class Quote:
    """A sentence quoted from passage [n]."""

    n: int
    text: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "text": self.text}


@dataclass
class Evidence:
    """The passages' sentences scored for one question: the best quotes and how strong they are."""

    question: str
    sentences: list[tuple[int, str]]  # (passage number, sentence)
    vectors: Any  # the sentences' embeddings (normalised), in the same order
    similarities: list[float]  # cosine of each sentence to the question
    quotes: list[Quote] = field(default_factory=list)
    clause_similarity: float = 0.0  # the best cosine of a clause of a sentence (0 when none splits or none was read)
    overlap: list[float] = field(default_factory=list)  # each sentence's share of the question's words (rarity-weighted)
    following: list[str | None] = field(default_factory=list)  # the sentence after each one in its passage
    preceding: list[str | None] = field(default_factory=list)  # the sentence before each one in its passage

    @property
    def strength(self) -> float:
        """How well the passages cover the question: the best cosine similarity to it of a sentence or
        of a clause of one (a long list sentence that holds "PDF (page numbers are kept)" scores low
        as a whole against "Are page numbers kept for PDF files?"; the clause scores high). 0 when the
        passages have no sentence."""
        return max(max(self.similarities, default=0.0), self.clause_similarity)


@dataclass(frozen=True)
class Grounding:
    """Whether a generated answer is supported by the passages, and what in it is not."""

    grounded: bool
    support: float  # the weakest claim's best similarity to a passage sentence
    unsupported: tuple[str, ...] = ()  # claims, numbers or names not found in the passages


# what is markup, not words to quote: images and badges, link targets, a few HTML tags
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")  # [text](url "title") -> text
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^<>`]+>`_{1,2}")  # `text <url>`__ -> text
_INLINE_TAG = re.compile(r"</?(?:a|abbr|b|code|em|i|kbd|small|span|strong|sub|sup|u)\b[^<>]*>", re.IGNORECASE)
_BLOCK_TAG = re.compile(r"</?(?:br|center|details|div|h[1-6]|hr|img|li|ol|p|picture|pre|source|summary|table|tbody|"
                        r"td|th|thead|tr|ul)\b[^<>]*>", re.IGNORECASE)
# a line of one repeated character: under (and maybe over) a heading in reStructuredText and setext
# markdown, or alone as a rule
_ADORNMENT = re.compile(r"[ \t]*([=\-~^\"'`#*+_])\1{2,}[ \t]*")
_TABLE_RULE = re.compile(r"(?m)^[^\n]*\n[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*$")  # header + |---|---|
_TABLE_ROW = re.compile(r"(?m)^(?=[ \t]*\|)")
# a code fence line ("```python") or a reStructuredText directive line (".. code:: python"): the code is kept
_FENCE = re.compile(r"(?m)^[ \t]*(?:(?:`{3,}|~{3,})[^\n`]*|\.\. [\w:-]+::[ \t]*[\w.+-]*[ \t]*)$")
_RST_LITERAL = re.compile(r"``([^`\n]+)``")  # ``code`` -> `code`
_LEADERS = re.compile(r"(?m)^.*(?:\. ?){5,}.*$")  # a table of contents' line: "Invoking asn1Parser . . . . 5"
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")


def plain_markup(text: str) -> str:
    """`text` with images and badges removed, links reduced to their text (markdown and
    reStructuredText) and common HTML tags dropped: what a reader sees, not the markup around it.
    Inline code is left as written ("use the `<b>` tag")."""
    text = _RST_LITERAL.sub(r"`\1`", _RST_LINK.sub(r"\1", text))
    parts = _CODE_SPAN.split(text)  # odd places: `code`
    for i in range(0, len(parts), 2):
        parts[i] = _BLOCK_TAG.sub(" ", _INLINE_TAG.sub("", _MD_LINK.sub(r"\1", _IMAGE.sub("", parts[i]))))
    return "".join(parts)


def split_sentences(text: str) -> list[str]:
    """Sentences (and list items, table rows, and paragraphs) of a passage, whitespace folded and markup
    reduced to its words (`plain_markup`); left out: headings (markdown, underlined or a PDF's title
    lines), a table's header row, rules, and lines of a table of contents."""
    text = _without_underlined(_TABLE_RULE.sub("", plain_markup(text)))
    text = _LEADERS.sub("", _FENCE.sub("", text))
    text = _TITLE_LINE.sub(r"\1\n\n", _HEADING_LINE.sub("", text))
    text = _TABLE_ROW.sub("\n", text)  # each table row is a sentence of its own
    parts = (" ".join(part.split()).strip(" #*-") for part in _SENTENCE_END.split(text))
    return [part for part in parts if part]


def _without_underlined(text: str) -> str:
    """`text` without rules and underlined headings: a line of one repeated character at least about as
    long as the line above it ("Usage" over "=====") takes that line with it."""
    lines = text.split("\n")
    keep = [True] * len(lines)
    for i, line in enumerate(lines):
        if not _ADORNMENT.fullmatch(line):
            continue
        keep[i] = False
        title = lines[i - 1].strip() if i else ""
        if title and not _ADORNMENT.fullmatch(lines[i - 1]) and len(line.strip()) >= 0.6 * len(title):
            keep[i - 1] = False
    return "\n".join(line if kept else "" for line, kept in zip(lines, keep))


class EvidenceFinder:
    """Sentence-level evidence with the embedding model, ordered by the cross-encoder when one is given."""

    def __init__(self, embeddings: Embedder, cross_encoder: CrossEncoderModel | None = None,
                 grounding_level: float = 0.55, clauses_below: float = 1.0, quote_words: float = 0.0,
                 idf: Callable[[str], float] | None = None) -> None:
        self.embeddings = embeddings
        self.cross_encoder = cross_encoder
        self.grounding_level = grounding_level
        # quotes are ordered by cosine + quote_words x the share of the question's words a sentence holds,
        # each word weighted by `idf` (its rarity in the collection; 1 for every word without one)
        self.quote_words = quote_words
        self.idf = idf
        # clauses are embedded only when no whole sentence reaches this (the abstain level): they can
        # only raise the strength, and they cost about half again the evidence step
        self.clauses_below = clauses_below

    def find(self, question: str, passages: Sequence[tuple[int, str]], answer: str | None = None) -> Evidence:
        """Score every sentence of the numbered passages; pick up to three quotes that best support
        the question (and `answer` when given)."""
        import numpy as np

        split = []
        for n, text in passages:
            parts = split_sentences(text)
            split += [(n, (parts[i - 1] if i else None, parts[i + 1] if i + 1 < len(parts) else None), s)
                      for i, s in enumerate(parts) if len(s.split()) >= MIN_SENTENCE_WORDS]
        if not split:
            split = [(n, (None, None), " ".join(text.split())) for n, text in passages if text.strip()]
        if not split:
            return Evidence(question, [], np.zeros((0, 1)), [])
        sentences = [(n, s) for n, _, s in split]
        vectors = np.asarray(self.embeddings.embed_documents([s for _, s in sentences]))
        question_vector = np.asarray(self.embeddings.embed_query(question))
        similarities = (vectors @ question_vector).tolist()
        evidence = Evidence(question, sentences, vectors, similarities, following=[f for _, (_, f), _ in split],
                            preceding=[b for _, (b, _), _ in split])
        if self.quote_words and self.cross_encoder is None:
            evidence.overlap = word_overlap(question, [s for _, s in sentences], self.idf)
        clauses = [clause for _, sentence in sentences for clause in _clauses(sentence)]
        if clauses and max(similarities) < self.clauses_below:
            clause_vectors = np.asarray(self.embeddings.embed_documents(clauses))
            evidence.clause_similarity = float((clause_vectors @ question_vector).max())
        evidence.quotes = self.quotes(evidence, answer)
        return evidence

    def quotes(self, evidence: Evidence, answer: str | None = None, only: set[int] | None = None) -> list[Quote]:
        """Up to three quotes, best first, from the passages numbered in `only` (all by default)."""
        import numpy as np

        scores = np.asarray(evidence.similarities, dtype="float64")
        if answer and _content_words(answer):
            answer_vector = np.asarray(self.embeddings.embed_query(_CITATION.sub("", answer)))
            scores = np.maximum(scores, evidence.vectors @ answer_vector)
        if len(evidence.overlap) == len(scores):
            scores = scores + self.quote_words * np.asarray(evidence.overlap, dtype="float64")
        if self.cross_encoder is not None and len(evidence.sentences):
            pairs = [(evidence.question, sentence) for _, sentence in evidence.sentences]
            scores = np.asarray(self.cross_encoder.predict(pairs, show_progress_bar=False), dtype="float64")
        order = [i for i in np.argsort(-scores) if only is None or evidence.sentences[i][0] in only]
        if not order:
            return []
        best = scores[order[0]]
        margin = QUOTE_MARGIN * (max(abs(best), 1e-9) if self.cross_encoder is not None else 1.0)
        chosen = [i for i in order[:MAX_QUOTES] if scores[i] >= best - margin]
        quotes = []
        chosen_texts = {evidence.sentences[j][1] for j in chosen}
        for rank, i in enumerate(chosen):
            before, after = _context(evidence, i, back_reference=rank == 0)
            parts = [evidence.sentences[i][1]]
            if before is not None and before not in chosen_texts:  # a quote of its own already: not twice
                parts.insert(0, before)
            if after is not None and after not in chosen_texts:
                parts.append(after)
            quotes.append(Quote(evidence.sentences[i][0], " ".join(parts), round(float(scores[i]), 4)))
        return quotes

    def grounding(self, answer: str, evidence: Evidence, passages: Sequence[str]) -> Grounding:
        """Is every claim of `answer` supported by one of the sentences that answer the *question*
        best (by meaning, or by holding most of its words), and is every number and name in it present
        in the passages? Words found somewhere in the passages are not enough: "in the config.yaml
        file" must be said by a sentence about where the data lives, not by one about the config."""
        import numpy as np

        text = _CITATION.sub("", answer).strip()
        claims = [c for c in split_sentences(text) if _content_words(c)]
        if not claims or not evidence.sentences:
            return Grounding(False, 0.0, (text,) if text else ())
        relevant = np.argsort(-np.asarray(evidence.similarities))[:RELEVANT_SENTENCES]
        sentence_words = [set(_content_words(evidence.sentences[i][1])) for i in relevant]
        claim_vectors = np.asarray(self.embeddings.embed_documents(claims))
        best = (claim_vectors @ evidence.vectors[relevant].T).max(axis=1)
        unsupported = []
        for claim, similarity in zip(claims, best):
            words = set(_content_words(claim))
            covered = max(len(words & found) / len(words) for found in sentence_words)
            if similarity < self.grounding_level and covered < 0.8:
                unsupported.append(claim)
        source = " ".join(passages).lower()
        unsupported += [token for token in _facts(text) if token.lower() not in source]
        return Grounding(not unsupported, round(float(best.min()), 4), tuple(unsupported))


# a sentence that goes on about the one before it ("It was ...", "They ...", "This ..."): quoted with it
_CONTINUES = re.compile(r"(?:He|She|It|They|This|These|That|Those|Its|Their|His|Her|There|Such|However|Also)\b")
_REFERS_BACK = re.compile(r"(?:He|She|It|They|This|These|That|Those|Its|Their|His|Her|Such|However|Also)\b")  # not "There is"


def _context(evidence: Evidence, i: int, back_reference: bool = True) -> tuple[str | None, str | None]:
    """The sentences before and after sentence `i` in its passage that its quote needs (None when it needs
    none): the one before when sentence `i` refers back to it ("This includes NaN ..." after "It raises
    JSONDecodeError if ..."); the one after when sentence `i` leads into it ("IPython is supported via the
    ``tqdm.notebook`` submodule:"; in technical documents the command or code follows) or, with
    `back_reference` (the best quote), when that one refers back ("It ...", "They ...", "This ..."; on
    SQuAD the answer is often there: "... William of Volpiano. He was ...")."""
    if not (len(evidence.following) == len(evidence.preceding) == len(evidence.sentences)):
        return None, None
    sentence, before, after = evidence.sentences[i][1], evidence.preceding[i], evidence.following[i]
    needs_before = before is not None and _REFERS_BACK.match(sentence) is not None
    needs_after = after is not None and (sentence.endswith(":") or back_reference and _CONTINUES.match(after))
    return before if needs_before else None, after if needs_after else None


@cache
def _stop_tokens() -> frozenset[str]:
    """Our stop words as the keyword index's tokens: its own list keeps "where", "does" and "it", which
    say nothing about what a question asks."""
    from .bm25 import keyword_tokens

    return frozenset().union(*keyword_tokens(sorted(STOPWORDS)))


def content_tokens(text: str) -> set[str]:
    """The words of `text` as the keyword index reads them (stemmed), our stop words left out."""
    from .bm25 import keyword_tokens

    return keyword_tokens([text])[0] - _stop_tokens()


def word_overlap(question: str, sentences: Sequence[str], idf: Callable[[str], float] | None = None) -> list[float]:
    """For each sentence, the share of the question's words (stemmed as the keyword index reads them, stop
    words left out) that it holds, each word weighted by `idf` (1 when None): holding the question's
    rare words ("small talk") counts for more than its common ones ("the bot")."""
    from .bm25 import keyword_tokens

    tokens = keyword_tokens([question, *sentences])
    asked, found = tokens[0] - _stop_tokens(), tokens[1:]
    weight = {token: idf(token) if idf is not None else 1.0 for token in asked}
    total = sum(weight.values())
    if not total:
        return [0.0] * len(sentences)
    return [sum(weight[token] for token in asked & words) / total for words in found]


def _clauses(sentence: str) -> list[str]:
    """The clauses of a sentence that splits into two or more of at least three words each."""
    parts = [part.strip(" `'\"") for part in _CLAUSE_BREAK.split(sentence)]
    clauses = [part for part in parts if len(part.split()) >= MIN_CLAUSE_WORDS]
    return clauses if len(parts) > 1 else []


def named_terms(question: str) -> list[str]:
    """The names, numbers and technical terms a question asks about ("Ollama", "1895", "int8"): the
    words whose absence from the documents means they cannot answer it. Capitalised words that start
    a sentence are left out (they are capitalised for that reason)."""
    found = _facts(question) + [term.strip(".-") for term in _TECHNICAL.findall(question)]
    terms: list[str] = []
    for term in found:
        if len(term) > 1 and term.lower() not in STOPWORDS and term.lower() not in (t.lower() for t in terms):
            terms.append(term)
    return terms


_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()


def numbers_missing(question: str, texts: Sequence[str]) -> list[str]:
    """The numbers the question states ("1,307,204", "1974") that none of `texts` states, compared without
    thousands separators ("1,307,204" is 1307204; "1,307,402" is another number); a number up to twenty
    also counts as stated when written as a word ("five")."""
    stated: set[str] = set()
    words: set[str] = set()
    for text in texts:
        stated |= {number.replace(",", "") for number in _NUMBER.findall(text)}
        words |= set(re.findall(r"[a-z]+", text.lower()))
    missing = []
    for number in _NUMBER.findall(question):
        plain = number.replace(",", "")
        spelt = _NUMBER_WORDS[int(plain)] if plain.isdigit() and int(plain) < len(_NUMBER_WORDS) else None
        if plain not in stated and (spelt is None or spelt not in words) and number not in missing:
            missing.append(number)
    return missing


def _content_words(text: str) -> list[str]:
    return [w.lower() for w in _TOKEN.findall(text) if w.lower() not in STOPWORDS and len(w) > 2 or w.isdigit()]


def _facts(text: str) -> list[str]:
    """Numbers and names (capitalised words that do not start a sentence, a line or what follows a colon)
    stated in `text`."""
    facts = _NUMBER.findall(text)
    for part in (part for sentence in split_sentences(text) for part in re.split(r"[:\n]", sentence)):
        words = part.split()
        facts += [w.strip(".,;:!?\"'()") for w in words[1:] if w[:1].isupper() and w.strip(".,;:!?\"'()").isalpha()
                  and w.strip(".,;:!?\"'()").lower() not in STOPWORDS]
    return facts


_ANSWER_CODE = re.compile(r"`([^`\n]{1,80})`")
_CODE_WORD = re.compile(r"(?<![\w/.-])(?:--?[A-Za-z][\w-]*|[A-Za-z_][\w-]*(?:[._/:][\w-]+)+|[a-z]+_[\w]+)(?![\w/-])")


_NOT_NAMES = frozenset({"yes", "no", "i", "ok"})  # capitalised after a comma ("Yes, ..."), not names


def facts_missing(answer: str, texts: Sequence[str]) -> list[str]:
    """The numbers, names and code tokens of a written answer that none of `texts` holds: "4" in "uses 4
    heads" over a passage that says 8, "Ollama" over passages that never name it, `reranker.top_k` where
    they say `reranker.top_n`. Numbers are compared as `numbers_missing` compares them (separators, small
    numbers written as words); names and code case-insensitively, as written."""
    source = " ".join(texts).lower()
    missing = numbers_missing(answer, texts)
    names = [w for w in _facts(answer) if not _NUMBER.fullmatch(w) and w.lower() not in _NOT_NAMES]
    code = [m.strip() for m in _ANSWER_CODE.findall(answer)] + [m.rstrip(".:") for m in _CODE_WORD.findall(answer)]
    for token in names + code:
        if token and token.lower() not in source and token not in missing:
            missing.append(token)
    return missing


COPIED_SHARE = 0.9  # the share of a sentence's words that must come in runs of COPIED_RUN from one passage
COPIED_RUN = 4


def copied(answer: str, texts: Sequence[str]) -> bool:
    """Whether every sentence of a written answer is copied from one of `texts`: at least `COPIED_SHARE`
    of its words in runs of `COPIED_RUN` or more words, in the passage's order ("Run the same command again:
    it finishes the work ... [1]" over the passage saying so). Such an answer is a quote, so it needs no
    model to say the passages support it."""
    from difflib import SequenceMatcher

    sources = [[w.lower() for w in _TOKEN.findall(text)] for text in texts]
    sentences = [[w.lower() for w in _TOKEN.findall(sentence)] for sentence in split_sentences(_CITATION.sub("", answer))]
    if not sentences or not any(sentences):
        return False
    for words in (sentence for sentence in sentences if sentence):
        best = 0
        for source in sources:
            blocks = SequenceMatcher(None, words, source, autojunk=False).get_matching_blocks()
            best = max(best, sum(block.size for block in blocks if block.size >= COPIED_RUN))
        if best < COPIED_SHARE * len(words):
            return False
    return True


# the number of a step in a list ("1. Install ... 2. Run ..."), at a line's start or after a colon or a sentence's end
_LIST_NUMBER = re.compile(r"(^|\n|[:.!?])([ \t]*)\d{1,2}[.)](?=\s)")


def without_list_numbers(text: str) -> str:
    """A written answer without the numbers of its list's steps, which are no facts to find in a passage
    ("To run it: 1. Install Python. 2. Run make run."); "exit status 2." keeps its 2."""
    return _LIST_NUMBER.sub(r"\1\2", text)


_WORD_OR_NUMBER = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z'-]*")
NUMBER_WINDOW = 4  # content words either side of a number in a written answer that say what it counts
PASSAGE_WINDOW = 6  # content words either side of the same number in a passage


def numbers_out_of_place(answer: str, texts: Sequence[str]) -> list[str]:
    """The numbers of a written answer that the passages state only beside other words: "uses 4 parallel
    attention heads" over a passage whose 4 is "a beam size of 4" (its heads are "h = 8 parallel attention
    layers"). Windows count content words, so that "The exit code for this situation is 2" still reaches
    "exit" for a passage's "exit status 2". A number with no content word near it in the answer, or that no
    passage states, is left to the other checks."""
    words = _counted(_WORD_OR_NUMBER.findall(answer))
    passages = [_counted(_WORD_OR_NUMBER.findall(text)) for text in texts]
    out: list[str] = []
    for i, word in enumerate(words):
        if not _NUMBER.fullmatch(word):
            continue
        near = _stems(words[max(0, i - NUMBER_WINDOW): i + NUMBER_WINDOW + 1])
        around = [_stems(tokens[max(0, j - PASSAGE_WINDOW): j + PASSAGE_WINDOW + 1])
                  for tokens in passages for j, token in enumerate(tokens) if token.replace(",", "") == word.replace(",", "")]
        if near and around and not any(near & stems for stems in around) and word not in out:
            out.append(word)
    return out


def _counted(words: Sequence[str]) -> list[str]:
    """The numbers and the content words of a text, in order: what the windows above count."""
    return [w for w in words if _NUMBER.fullmatch(w) or (len(w) > 1 and w.lower() not in STOPWORDS)]


def _stems(words: Sequence[str]) -> set[str]:
    """Content words stemmed as the keyword index stems them ("heads" and "head", "exits" and "exit"
    meet), numbers left out."""
    stem = english_stem()
    return {stem(w.lower()) for w in words if w[:1].isalpha() and len(w) > 1 and w.lower() not in STOPWORDS}

