"""`rag-bot serve` under load: 8 clients at once (the official `openai` client, one thread each),
each asking its questions in turn, against one client asking the same questions alone.

The example documents are ingested and their scope filter trained as `make run` does; the server
runs in its own process on 127.0.0.1. Per answer mode (`extract`: the shipped default, no LLM;
`auto`: the packaged GGUF writes the answer), prints and records: every reply answered (no error,
in-scope questions not declined, sources present), latency p50/p95 per request, and the wall time of
the whole load. Writes bench/results/api_concurrency.json.

    .venv/bin/python bench/api_concurrency.py [--clients 8] [--rounds 2] [--modes extract,auto]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llm_latency import QUESTIONS
from scifact import ROOT, cpu_flags, machine

RAG_BOT = str(Path(sys.executable).parent / "rag-bot")
WORK = ROOT / ".rag_bot" / "bench-api"  # inside the checkout (git-ignored)
OFF_TOPIC = "what is the best pizza topping?"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)  # p95: nearest rank
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[math.ceil(0.95 * len(ordered)) - 1], 1)}


def prepare(mode: str) -> Path:
    """A config over the example documents (ingested once, filter trained once) answering in `mode`."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"config-{mode}.yaml"
    path.write_text(f"data_dir: {WORK / 'data'}\nchat: {{answer_mode: {mode}}}\n", encoding="utf-8")
    subprocess.run([RAG_BOT, "--config", str(path), "ingest", str(ROOT / "examples" / "docs"), "--no-progress"],
                   check=True, capture_output=True)
    if not (WORK / "data" / "filters" / "rag_bot.json").exists():
        subprocess.run([RAG_BOT, "--config", str(path), "train-filter", "--from-corpus"], check=True, capture_output=True)
    return path


def start(config: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([RAG_BOT, "--config", str(config), "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"rag-bot serve stopped: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.5)
    server.kill()
    raise SystemExit("rag-bot serve did not come up")


def ask(port: int, question: str) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=900)
    started = time.perf_counter()
    try:
        reply = client.chat.completions.create(model="rag_bot", messages=[{"role": "user", "content": question}])
    except openai.APIError as exc:
        return {"question": question, "ok": False, "error": str(exc), "ms": (time.perf_counter() - started) * 1000}
    ms = (time.perf_counter() - started) * 1000
    extra = reply.model_extra["rag_bot"]
    off_topic = question == OFF_TOPIC
    ok = bool(reply.choices[0].message.content) and (
        extra["declined"] if off_topic else (not extra["declined"] and bool(extra["sources"])))
    return {"question": question, "ok": ok, "declined": extra["declined"], "ms": ms}


def run_mode(mode: str, clients: int, rounds: int, port: int) -> dict:
    server = start(prepare(mode), port)
    questions = QUESTIONS + [OFF_TOPIC]
    try:
        ask(port, questions[0])  # warm-up: models loaded
        alone = [ask(port, question) for question in questions]
        work = [[questions[(client + turn) % len(questions)] for turn in range(rounds)] for client in range(clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            loaded = [row for rows in pool.map(lambda mine: [ask(port, q) for q in mine], work) for row in rows]
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    failures = [row for row in alone + loaded if not row["ok"]]
    return {"answer_mode": mode, "clients": clients, "requests": len(loaded), "answered": len(loaded) - len(
        [row for row in loaded if not row["ok"]]), "failures": failures[:5],
            "alone_ms": percentiles([row["ms"] for row in alone]),
            "concurrent_ms": percentiles([row["ms"] for row in loaded]),
            "concurrent_wall_s": round(wall, 2), "requests_per_s": round(len(loaded) / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="questions each client asks in turn")
    parser.add_argument("--modes", default="extract,auto")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api_concurrency.json"))
    args = parser.parse_args()

    results = {"machine": machine(), "cpu_flags": cpu_flags(), "runs": []}
    for mode in args.modes.split(","):
        run = run_mode(mode, args.clients, args.rounds, args.port)
        results["runs"].append(run)
        print(f"{mode:>8}: {run['answered']}/{run['requests']} answered with {run['clients']} clients at once; "
              f"latency p50 {run['concurrent_ms']['p50']:.0f} ms, p95 {run['concurrent_ms']['p95']:.0f} ms "
              f"(one client alone: p50 {run['alone_ms']['p50']:.0f} ms, p95 {run['alone_ms']['p95']:.0f} ms); "
              f"{run['requests_per_s']} requests/s", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
