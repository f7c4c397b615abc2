"""Questions that ask about the opposite of what the closest sentences say: "Which city is *not* near
the coast?" when the best quotes only say which cities are, "What is the *lowest* temperature?" when
they give the highest. Quoted as "the documents say", those sentences would read as the answer; the
chain says the documents don't say instead (`chat.check_contrasts`), and still lists them.

Two cheap rules, no model: a negation in the question that no quoted sentence has, and a word of the
question whose opposite (a short list of pairs: first/last, most/least, before/after, ...) the quotes
use while never using the word itself. Measured on SQuAD 2.0, whose unanswerable questions are often
made this way (BENCHMARKS.md, "Answers").
"""

from __future__ import annotations

import re
from typing import Sequence

from .injections import without_quotes

NEGATIONS = frozenset({"not", "never", "no", "none", "nobody", "nothing", "nowhere", "neither", "nor", "without",
                       "cannot"})
_PAIRS = (("first", "last"), ("earliest", "latest"), ("most", "least"), ("largest", "smallest"),
          ("biggest", "smallest"), ("highest", "lowest"), ("before", "after"), ("increase", "decrease"),
          ("increased", "decreased"), ("north", "south"), ("east", "west"), ("northern", "southern"),
          ("eastern", "western"), ("major", "minor"), ("earlier", "later"), ("oldest", "newest"), ("best", "worst"),
          ("better", "worse"), ("higher", "lower"), ("larger", "smaller"), ("maximum", "minimum"),
          ("connected", "unconnected"), ("possible", "impossible"), ("success", "failure"),
          ("successful", "unsuccessful"), ("accepted", "rejected"), ("internal", "external"), ("longest", "shortest"),
          ("above", "below"), ("inside", "outside"), ("positive", "negative"), ("private", "public"))
OPPOSITES: dict[str, frozenset[str]] = {
    word: frozenset(b if a == word else a for a, b in _PAIRS if word in (a, b)) for pair in _PAIRS for word in pair}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_IDIOMS = re.compile(r"\bwhether or not\b|\bif not\b|\bnot only\b|\bno longer\b|\bno more than\b|\bnot least\b")


def _words(text: str) -> list[str]:
    return _WORD.findall(_IDIOMS.sub(" ", text.lower().replace("\u2019", "'")))


# a negation after one of these states the question's situation ("what do I do when the model cannot be
# loaded?") or repeats a message the user saw ("it says no chroma server answers"), not what it asks about
CONDITIONS = frozenset({"when", "whenever", "if", "unless", "because", "since", "once", "while", "case",
                        "says", "said", "shows", "showed", "prints", "printed", "error", "message", "complains"})


def _negations(words: list[str]) -> list[str]:
    return [w for w in words if w in NEGATIONS or w.endswith("n't")]


def _asked_negations(words: list[str]) -> list[str]:
    """The question's negations that are not in a condition."""
    for i, word in enumerate(words):
        if word in CONDITIONS:
            return _negations(words[:i])
    return _negations(words)


def contrast(question: str, quotes: Sequence[str]) -> str | None:
    """Why the quotes do not answer `question` (one clause, for "The documents don't say. ..."), or None.
    Quoted spans of the question ('What does "no server answers" mean?') are left out: they are what it
    asks about."""
    if not quotes:
        return None
    asked = _words(without_quotes(question) or question)
    said = {w for quote in quotes for w in _words(quote)}
    negated = _asked_negations(asked)
    if negated and not _negations(list(said)):
        return f'The question asks about what is not the case ("{negated[0]}"); the closest sentences never say so.'
    for word in asked:
        opposite = sorted(OPPOSITES.get(word, frozenset()) & said)
        if opposite and word not in said:
            return f'The question asks about "{word}"; the closest sentences speak of "{opposite[0]}".'
    return None
