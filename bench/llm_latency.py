"""Time to first token and tokens per second: our chain (what `rag-bot ask` runs) against calling
llama-cpp-python directly with the same final prompt, same model file and same settings.

Ours is timed from the question to the first answer text shown, so it includes embedding the question,
the scope filter, retrieval and building the prompt; raw is timed from `create_completion` to its
first token. Greedy decoding (temperature 0) in both, so both generate the same tokens. Runs
alternate (ours, raw, ours, ...) after one warm-up each, so machine noise hits both alike. A few
cold `rag-bot ask` runs (a new process: model loads included) are timed as well.

    .venv/bin/python bench/llm_latency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scifact import ROOT, machine

from rag_bot.chain import load_chain
from rag_bot.config import load_config
from rag_bot.events import Text

QUESTIONS = [
    "Where does rag-bot keep its data?",
    "Which file formats can I ingest?",
    "How do I ingest a folder of documents?",
    "Does rag-bot send my documents anywhere?",
    "How are documents cut into chunks?",
    "What does the reranker do?",
    "How do I run a Chroma server?",
    "What happens when a file cannot be read?",
]
# inside the checkout (git-ignored): a store mirrors one folder, so each checkout keeps its own
WORK = ROOT / ".rag_bot" / "bench-chat"
RAG_BOT = str(Path(sys.executable).parent / "rag-bot")


def prepare() -> Path:
    """examples/docs ingested and the bootstrap filter trained, as `make run` does (reused when present)."""
    WORK.mkdir(parents=True, exist_ok=True)
    config = WORK / "config.yaml"
    # generate, never abstain: every question reaches the LLM, which is what this benchmark times
    config.write_text("data_dir: data\nreranker: {enabled: false}\nllm: {temperature: 0.0}\n"
                      "chat: {answer_mode: generate, min_evidence: -1.0}\n")
    subprocess.run([RAG_BOT, "--config", str(config), "ingest", str(ROOT / "examples" / "docs"), "--no-progress"],
                   check=True, capture_output=True)
    subprocess.run([RAG_BOT, "--config", str(config), "train-filter", "--from-corpus"], check=True,
                   capture_output=True)
    return config


def timed(pieces) -> tuple[float, int, float]:
    """(ms to the first piece, pieces, pieces per second after the first) of a stream of text pieces."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for _ in pieces:
        last = time.perf_counter()
        first = first or last
        count += 1
    if first is None:
        return float("nan"), 0, float("nan")
    rate = (count - 1) / (last - first) if count > 1 and last > first else float("nan")
    return (first - start) * 1000, count, rate


def ours(chain, question: str) -> tuple[float, int, float]:
    """(ms to the first answer text shown, the LLM's pieces, pieces per second after the first). The pieces are
    counted as the LLM gives them: the chain's text events may join a few (it holds back what may be an opener
    such as "The passage [1] states that", rag_bot/citing.py), and the comparison with raw llama.cpp is of
    tokens."""
    given: list[float] = []
    stream = chain.llm.stream

    def counted(*args, **kwargs):
        for piece in stream(*args, **kwargs):
            if piece:
                given.append(time.perf_counter())
            yield piece

    chain.llm.stream = counted
    start = time.perf_counter()
    shown = None
    try:
        for event in chain.stream(question):
            if isinstance(event, Text) and event.piece and shown is None:
                shown = time.perf_counter()
    finally:
        del chain.llm.stream  # the instance attribute: the class's method again
    if shown is None or not given:
        return float("nan"), 0, float("nan")
    rate = (len(given) - 1) / (given[-1] - given[0]) if len(given) > 1 and given[-1] > given[0] else float("nan")
    return (shown - start) * 1000, len(given), rate


def raw(llama, prompt: str, params: dict) -> tuple[float, int, float]:
    stream = llama.create_completion(prompt=prompt, stream=True, **params)
    return timed(text for part in stream if (text := part["choices"][0]["text"]))


def cold_ask(config: Path, question: str) -> float:
    """ms from starting `rag-bot ask` to the first byte of the answer (process start and model loads included)."""
    start = time.perf_counter()
    process = subprocess.Popen([RAG_BOT, "--config", str(config), "ask", question], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    process.stdout.read(1)
    first = time.perf_counter()
    process.communicate()
    return (first - start) * 1000


def summary(rows: list[tuple[float, int, float]]) -> dict:
    return {"ttft_ms_p50": round(statistics.median(r[0] for r in rows), 1),
            "tokens_per_s_p50": round(statistics.median(r[2] for r in rows if r[2] == r[2]), 1),
            "tokens_p50": statistics.median(r[1] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="only the first N questions")
    parser.add_argument("--cold", type=int, default=3, help="cold `rag-bot ask` runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_latency.json")
    args = parser.parse_args()
    config_path = prepare()
    config = load_config(config_path)
    chain = load_chain(config)
    chain.llm.preload()
    from llama_cpp import Llama

    llama = Llama(str(chain.llm.model_file()), n_ctx=config.llm.n_ctx, n_threads=config.llm.threads or os.cpu_count(),
                  n_batch=min(512, config.llm.n_ctx), verbose=False)
    # the sampling settings LangChain's LlamaCpp sends (greedy here), so both generate the same tokens
    params = {key: value for key, value in chain.llm.model._default_params.items() if key not in ("suffix", "stop_sequences")}
    params["stop"] = config.llm.stop
    ours(chain, "How do I install rag-bot?")  # warm-up, with a question not measured
    raw(llama, chain.llm.render(*chain.last_prompt), params)
    mine, theirs, ratios = [], [], []
    for _ in range(args.rounds):
        for question in QUESTIONS[:args.questions]:
            a = ours(chain, question)
            if chain.last_prompt is None:
                continue
            b = raw(llama, chain.llm.render(*chain.last_prompt), params)
            if not (a[1] and b[1]):  # the model stopped at once: no first token to time
                print(f"(no tokens: ours {a[1]}, raw {b[1]}) | {question}")
                continue
            mine.append(a)
            theirs.append(b)
            ratios.append(a[0] / b[0])
            print(f"ours {a[0]:7.1f} ms {a[1]:3d} tok {a[2]:5.1f} tok/s | raw {b[0]:7.1f} ms {b[1]:3d} tok "
                  f"{b[2]:5.1f} tok/s | {question}")
    same_length = sum(a[1] == b[1] for a, b in zip(mine, theirs))
    cold = [cold_ask(config_path, QUESTIONS[i % len(QUESTIONS)]) for i in range(args.cold)]
    result = {
        "machine": machine(),
        "model": Path(chain.llm.model_file()).name,
        "n_ctx": config.llm.n_ctx, "threads": config.llm.threads or os.cpu_count(),
        "answers": len(mine), "answers_with_equal_token_counts": same_length,
        "token_counts": [[a[1], b[1]] for a, b in zip(mine, theirs)],  # (ours, raw) per answer
        "sampling": {key: value for key, value in params.items() if key != "stop"},
        "ours": summary(mine),
        "raw_llama_cpp": summary(theirs),
        "ttft_ratio_p50": round(statistics.median(ratios), 3),
        "tokens_per_s_ratio": round(summary(mine)["tokens_per_s_p50"] / summary(theirs)["tokens_per_s_p50"], 3),
        "cold_rag_bot_ask_first_byte_ms": [round(value) for value in cold],
        "command": "python bench/llm_latency.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
