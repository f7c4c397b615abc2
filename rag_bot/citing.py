"""The writer's answer as it streams, made to read as an answer with its evidence. A small model often
opens a sentence by talking about the passages ("The passage [1] states that it reads PDF files.") and
often cites nothing at all. `CitedStream` drops such an opener, moving its reference to the end of its
sentence ("It reads PDF files [1]."), and gives a sentence that cites nothing the number of the passage
holding most of its words. Only the start of a sentence that may open that way is held back (a few
words); everything else streams as it comes. Once the answer is written, `recited` moves a citation
whose passage lacks the claim's facts to the passage that holds them."""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Sequence

from .evidence import content_tokens, facts_missing, without_list_numbers, word_overlap

_HEAD = r"(?:the |this |both |these )?passages?"
_REFS = r"(?:\s*\[\d+\][\s,]*(?:and\s*)?)+"
_VERB = (r"(?:also |further |clearly |explicitly )?(?:states?|says?|mentions?|confirms?|explains?|notes?|indicates?|"
         r"shows?|describes?|suggests?|specifies|tells?(?: us)?)(?: this)?(?: by stating)?")
# "According to passage [2],", "The passage [1] states that", "Passages [1] and [3] also confirm this by stating
# that", "The passage says:"; never "The passage [1] is about ...", "The passage [4] also mentions X, which ..."
# (what is left would not be a sentence) or "The passages are cut at headings."
_OPENER = re.compile(rf"(?:according to|as (?:stated |said |mentioned |described )?in|as) {_HEAD}(?:{_REFS})?\s*(?:{_VERB})?\s*[,:]\s*"
                     rf"|{_HEAD}{_REFS}\s*(?:{_VERB}(?: that|\s*[,:])|[,:])\s*"
                     rf"|{_HEAD}\s+{_VERB}(?: that|:)\s*", re.IGNORECASE)
# the words an opener may start with, for as long as no other word has come ("According to the", "As")
_OPENER_START = re.compile(r"(?:according(?: to(?: (?:the|this))?)?|as(?: (?:stated|said|mentioned|described))?"
                           r"(?: in)?(?: (?:the|this))?|the|this|both|these)?", re.IGNORECASE)
_OPENER_HEAD = re.compile(rf"(?:according to |as (?:\w+ )?(?:in )?)?{_HEAD}\b", re.IGNORECASE)
_HOLD_CHARS = 80  # how much of a sentence's start is held back at most while deciding whether it opens that way
# a sentence ends at . ! or ? (and a closing quote) before a space, and at a line break before a blank line, a
# step of a list or a code fence, or after a fence; not at a line break inside a sentence ("Later runs only\nembed")
_END = re.compile(r"[.!?][\"')]*(?=\s)|(?=\n[ \t]*(?:\n|[-*+] |\d{1,2}[.)] |```))|(?<=```)(?=\n)")
_UNDECIDED_LINE = 4  # characters after a line break that may still turn out to be "1. " or a fence
_NOT_AN_END = re.compile(r"(?:^|\s)(?:\d+|[A-Za-z]|e\.g|i\.e|etc|vs|[A-Za-z]\.[A-Za-z])$")  # "1." of a list, "e.g."
_REF = re.compile(r"\[(\d+)\]")
SAYS_NOT_COVERED = re.compile(r"\b(?:documents|passages|texts?)\s+(?:do not|don't|does not|doesn't)\s+(?:\w+ly\s+)?"
                              r"(?:say|answer|mention|cover|contain|explain|state|provide|specify|include)", re.IGNORECASE)
MIN_SHARE = 0.5  # the share of a sentence's words a passage must hold to be cited for it
MIN_WORDS = 2  # and at least this many of them ("Yes." and "one two three" cite nothing)


class CitedStream:
    """Feed it the writer's pieces; it gives back the text to show. `passages`: the texts the model read,
    numbered from 1 in order."""

    def __init__(self, passages: Sequence[str]) -> None:
        self.passages = list(passages)
        self.held = ""  # text not yet shown
        self.sentence = ""  # the shown part of the sentence being written
        self.opening = True  # the held text starts a sentence
        self.moved: list[str] = []  # references taken from a dropped opener, for the end of its sentence
        self.fences = 0  # code fences seen: nothing is added inside a code block

    def feed(self, piece: str) -> str:
        self.held += piece
        return self._drain(final=False)

    def close(self) -> str:
        return self._drain(final=True)

    def _drain(self, final: bool) -> str:
        shown = []
        while self.held:
            if self.opening:
                text = self._open(final)
                if text is None:  # still deciding
                    break
                shown.append(text)
                continue
            end = _END.search(self.held)
            if end is None:  # (at the stream's end, what is kept is finished below)
                # keep a last "." (and what may be a reference after it) until it is clear what follows
                keep = len(self.held) - len(self.held.rstrip(".!?\"')"))
                line = self.held.rfind("\n")
                if line >= 0 and len(self.held[line:].strip()) < _UNDECIDED_LINE:  # a step or a fence may follow
                    keep = max(keep, len(self.held) - line)
                text, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep:]
                self.sentence += text
                shown.append(text)
                if keep:
                    break
                continue
            body, mark, self.held = self.held[: end.start()], end.group(0), self.held[end.end():]
            if _NOT_AN_END.search(self.sentence + body):
                self.sentence += body + mark
                shown.append(body + mark)
                continue
            shown.append(self._finish(body, mark))
        if final and (self.held or self.sentence):
            shown.append(self._finish(self.held, ""))
            self.held = ""
        return "".join(shown)

    def _open(self, final: bool) -> str | None:
        """The start of a sentence: the space before it passes; a start that may be an opener is held until it
        is clear (`_HOLD_CHARS`, the sentence's end, or the stream's); an opener is dropped."""
        stripped = self.held.lstrip()
        if not stripped:
            if final:
                text, self.held = self.held, ""
                return text
            return None
        space = self.held[: len(self.held) - len(stripped)]
        whole = stripped if final else re.sub(r"\S*$", "", stripped)  # up to the last whole word
        if not final and _OPENER_START.fullmatch(whole.strip()):  # "The" or "According to": not clear yet
            return None
        if _OPENER_HEAD.match(whole):
            opener = _OPENER.match(whole)
            # three whole words after it: "confirms this" may go on "by stating that"
            clear = opener is not None and len(whole[opener.end():].split()) >= 3
            if not (clear or final or len(stripped) >= _HOLD_CHARS or _END.search(stripped)):
                return None
            if opener is not None and opener.end() < len(stripped):
                self.moved = _REF.findall(opener.group(0))
                rest = stripped[opener.end():]
                # "it reads" -> "It reads"; "rag-bot runs" and "`config.yaml` holds" stay as written
                stripped = rest[:1].upper() + rest[1:] if re.match(r"[a-z]+\b(?![-_.])", rest) else rest
        self.held, self.opening = stripped, False
        return space

    def _finish(self, body: str, mark: str) -> str:
        """The end of a sentence: its reference added when it has none (a moved one, or the passage that holds
        most of its words), before its final mark."""
        sentence = self.sentence + body
        self.sentence, self.opening = "", True
        refs, self.moved = self.moved, []
        in_code = self.fences % 2 == 1 or "```" in sentence
        self.fences += sentence.count("```")
        if in_code or _REF.search(sentence) or SAYS_NOT_COVERED.search(sentence) or not sentence.strip():
            return body + mark
        if not refs:
            refs = self._closest(sentence)
        if not mark:  # the stream's end: its last mark is the sentence's
            stripped = body.rstrip()
            mark = stripped[len(stripped.rstrip(".!?\"')")):]
            body = stripped[: len(stripped) - len(mark)] + body[len(stripped):]
        trailing = body[len(body.rstrip()):]
        cite = "".join(f"[{n}]" for n in refs)
        if cite and mark[1:]:  # after a closing quote: 'It says "No GPU is needed." [2]'
            return body.rstrip() + mark + f" {cite}" + trailing
        return body.rstrip() + (f" {cite}" if cite else "") + mark + trailing

    def _closest(self, sentence: str) -> list[str]:
        """The number of the passage holding the largest share of the sentence's words (at least `MIN_SHARE`,
        and at least `MIN_WORDS` words)."""
        words = len(content_tokens(sentence))
        if not self.passages or not words:
            return []
        shares = word_overlap(sentence, self.passages)
        best = max(range(len(shares)), key=shares.__getitem__)
        return [str(best + 1)] if shares[best] >= MIN_SHARE and shares[best] * words >= MIN_WORDS else []


def with_citations(pieces: Iterable[str], passages: Sequence[str]) -> Iterator[str]:
    """The writer's pieces through a `CitedStream`; empty pieces left out."""
    stream = CitedStream(passages)
    for piece in pieces:
        text = stream.feed(piece)
        if text:
            yield text
    rest = stream.close()
    if rest:
        yield rest


_REF_RUN = re.compile(r"(?:\s*\[\d+\])+")


def recited(answer: str, passages: Sequence[str]) -> str:
    """The answer with each wrong citation moved: a claim (the text before a run of references, back to the
    previous run) whose numbers, names and code its cited passages lack, while another passage holds them
    all, cites that passage instead ("... 3 GB [3]" -> "... 3 GB [1]" when only [1] says 3 GB); of several
    such passages, the one holding most of its words. Anything else is left as written."""
    parts, start = [], 0
    for run in _REF_RUN.finditer(answer):
        claim, cited = answer[start: run.start()], [int(n) for n in _REF.findall(run.group(0))]
        parts += [claim, _recite(claim, cited, passages) or run.group(0)]
        start = run.end()
    return "".join(parts) + answer[start:]


def _recite(claim: str, cited: list[int], passages: Sequence[str]) -> str | None:
    """The reference run for `claim` when its cited passages lack its facts and another holds them; else None."""
    claim = without_list_numbers(claim)  # "2. Run it" states no 2
    held = [passages[n - 1] for n in cited if 1 <= n <= len(passages)]
    if len(held) < len(cited) or not facts_missing(claim, held):
        return None
    holding = [n for n in range(1, len(passages) + 1) if n not in cited and not facts_missing(claim, [passages[n - 1]])]
    if not holding:
        return None
    shares = word_overlap(claim, [passages[n - 1] for n in holding])
    best = holding[max(range(len(holding)), key=shares.__getitem__)]
    return f" [{best}]"
