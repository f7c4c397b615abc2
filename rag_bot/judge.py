"""Do the quotes answer the question? A small instruct model's yes or no, for "the documents don't say".

SQuAD 2.0's unanswerable questions reuse the words of the paragraph next to them, so no similarity or
word rule tells them apart from answerable ones (BENCHMARKS.md, sessions 11-15). An instruct model
reading the question with its quotes does: Qwen2.5-Coder 1.5B Instruct separates them with ROC AUC 0.80
(0.66 for its 0.5B sibling, 0.44 for SmolLM2 135M). The judge reads one forward pass, no generation:
its margin is the logit of "Yes" minus the logit of "No" as the reply's first token, and the chain
abstains below `chat.judge_level`.

    judge = AnswerJudge(gguf_path)
    judge.margin("Where is the data kept?", "Everything goes into the data folder, .rag_bot.")  # 3.1

The chain gives it each quote after its passage's file and heading (`chain.judge_text`), as cited.

A yes/no question is not judged: the model answers it instead of judging it ("Are hidden files
ingested?" over "Hidden files are left out." gets "No").
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from .errors import ModelError, first_line
from .questions import yes_no

SYSTEM = "You answer only from the given text."
# Two questions whose answers are plain: a working model tells the first (answered) from the second (open).
PROBE_ANSWERED = ("What colour is the sky on a clear day?", "On a clear day the sky is blue.")
PROBE_OPEN = ("What colour is the sky on a clear day?", "Bananas grow in warm countries.")
PROBE_GAP = 2.0
ASK = "Text: {text}\n\nQuestion: {question}\n\nDoes the text contain the answer to the question? Reply Yes or No."


def messages(question: str, text: str, system: str = SYSTEM, ask: str = ASK) -> list[dict[str, str]]:
    """The judge's chat: the text first, then the question (the other order scores worse: ROC AUC 0.70
    against 0.77 on SQuAD, bench/judge_prompts.py)."""
    return [{"role": "system", "content": system}, {"role": "user", "content": ask.format(text=text, question=question)}]


def judged(question: str) -> bool:
    """Whether the judge reads this question: not a yes/no question (see the module docstring)."""
    return not yes_no(question)


class AnswerJudge:
    """A GGUF instruct model (with a chat template) scoring whether a text answers a question; loaded on
    first use, one scoring at a time (a llama.cpp context is not thread-safe)."""

    def __init__(self, model_path: Path, threads: int | None = None, n_ctx: int = 2048, key: str = "chat.judge_model",
                 hint: str = "point it at a complete .gguf file", shared: Any = None) -> None:
        self.model_path = Path(model_path)
        self.hint = hint  # what to do when the file does not load or judges nothing
        self.threads = threads or os.cpu_count() or 1
        self.n_ctx = shared.n_ctx if shared is not None else n_ctx
        self.key = key
        # the chat's own LLM (a `LlamaCppLLM` of the same file): one model in memory, one read at a time
        self.shared = shared
        self._lock = shared.generate_lock if shared is not None else threading.Lock()
        self._client: Any = None
        self._template: Any = None
        self._yes: list[int] = []
        self._no: list[int] = []

    def _load(self) -> Any:
        from llama_cpp import Llama

        from .llm import quiet_native_logs, chat_template

        if self.shared is not None:
            return self._checked(self.shared.model.client, self.shared.template)
        try:
            with quiet_native_logs():
                client = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.threads,
                               n_batch=512, verbose=False)
        except Exception as exc:
            raise ModelError(f"{self.key}: llama-cpp-python could not load {self.model_path}: {first_line(exc)}; "
                             f"{self.hint}") from exc
        weakref.finalize(self, client.close)
        return self._checked(client, chat_template(client))

    def _checked(self, client: Any, template: Any) -> Any:
        """`client` once it has a chat template, single tokens for Yes and No, and judges the two probes."""
        self._template = template
        if self._template is None:
            raise ModelError(f"{self.key}: {self.model_path.name} has no chat template; the judge needs an "
                             "instruct model (for example package:rag_bot.judge_model)")
        self._yes = _single_tokens(client, ("Yes", "yes", " Yes", "YES"))
        self._no = _single_tokens(client, ("No", "no", " No", "NO"))
        if not self._yes or not self._no:
            raise ModelError(f"{self.key}: {self.model_path.name} has no single token for Yes and No")
        self._check_output(client)
        return client

    def _check_output(self, client: Any) -> None:
        """A damaged file can load and then judge nothing (every margin 0 or NaN, every question "the
        documents don't say"): a plainly answered question must score `PROBE_GAP` above a plainly open one
        (the packaged model: 4.4 against -0.4), or the load fails."""
        answered = self._margin(client, messages(*PROBE_ANSWERED))
        open_ = self._margin(client, messages(*PROBE_OPEN))
        if not (math.isfinite(answered) and math.isfinite(open_) and answered - open_ >= PROBE_GAP):
            raise ModelError(f"{self.key}: {self.model_path.name} loads but gives no usable judgement (margins "
                             f"{answered:.2f} and {open_:.2f} on two plain questions); the file may be damaged: "
                             f"{self.hint}")

    def preload(self) -> None:
        """Load the model now (for example in a background thread) rather than on the first question."""
        with self._lock:
            if self._client is None:
                self._client = self._load()

    def margin(self, question: str, text: str) -> float:
        """logit("Yes") - logit("No") for the reply's first token: above 0, the model says the text answers."""
        return self.score(messages(question, text))

    def score(self, chat: list[dict[str, str]]) -> float:
        """The same margin for any chat whose reply should begin with Yes or No (bench/judge_prompts.py
        tries other wordings through it)."""
        with self._lock:
            if self._client is None:
                self._client = self._load()
            return self._margin(self._client, chat)

    def _margin(self, client: Any, chat: list[dict[str, str]]) -> float:
        import llama_cpp
        import numpy as np

        from .llm import apply_messages

        prompt = apply_messages(self._template, client, chat)
        tokens = client.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        budget = self.n_ctx - 8
        if len(tokens) > budget:  # keep both ends (the system turn; the question and instruction): cut the middle
            tokens = tokens[: budget // 2] + tokens[-(budget - budget // 2):]
        # reuse the evaluated prefix (the system turn) as llama-cpp-python's own generate does
        same = 0
        for old, new in zip(client.input_ids[: client.n_tokens], tokens[:-1]):
            if old != new:
                break
            same += 1
        client.n_tokens = same
        client.eval(tokens[same:])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(client.ctx, -1), shape=(client.n_vocab(),))
        return float(logits[self._yes].max() - logits[self._no].max())


def _single_tokens(client: Any, words: tuple[str, ...]) -> list[int]:
    found = set()
    for word in words:
        tokens = client.tokenize(word.encode("utf-8"), add_bos=False, special=False)
        if len(tokens) == 1:
            found.add(tokens[0])
    return sorted(found)
