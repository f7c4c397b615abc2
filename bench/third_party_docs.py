"""Ask rag-bot about documents nobody on the project wrote: the READMEs of installed packages.

The public sets (SQuAD, SciFact) are clean prose, and examples/docs is our own writing; this checks that
the gate, the quotes and "the documents don't say" carry to real project documentation, with its
markdown tables, badges, reStructuredText and code. It writes the long descriptions of installed
packages (tqdm's is reStructuredText, the others markdown) into a folder, then does what `make run`
does (`rag-bot ingest`, `rag-bot train-filter --from-corpus`) and asks the questions of
bench/data/third_party_questions.tsv through the chain in extract mode (the default). The package
versions are recorded: their READMEs change between releases, and with them the right answers.

    .venv/bin/python bench/third_party_docs.py [--out bench/results/third_party_docs.json]
"""

from __future__ import annotations

import argparse
import collections
import email
import json
import logging
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGES = ("tqdm", "orjson", "rich", "fastapi", "httpx", "typer")
QUESTIONS = ROOT / "bench" / "data" / "third_party_questions.tsv"
EXTENSIONS = {"text/x-rst": ".rst", "text/markdown": ".md"}


def write_readmes(packages: list[str], folder: Path) -> dict[str, str]:
    """Each package's long description as a file of the folder; returns {package: version}."""
    versions = {}
    for name in packages:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"--packages: {name!r} is not installed in this Python; install it or leave it out")
        message = email.message_from_string(dist.read_text("METADATA") or "")
        body = message.get_payload() or message.get("Description") or ""
        kind = (message.get("Description-Content-Type") or "text/plain").split(";")[0].strip()
        (folder / f"{name}{EXTENSIONS.get(kind, '.txt')}").write_text(str(body), encoding="utf-8")
        versions[name] = dist.version
    return versions


def read_questions(path: Path) -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, question, expected = (line.split("\t") + ["", ""])[:3]
            rows.append((kind, question, [e.strip() for e in expected.split("|") if e.strip()]))
    return rows


def rag_bot(config: Path, *args: str) -> None:
    program = Path(sys.executable).with_name("rag-bot")
    if not program.exists():
        raise SystemExit(f"{program} not found: run this script with the project's .venv/bin/python")
    command = [str(program), "--config", str(config), *args]
    print(f"rag-bot {' '.join(args)}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed:\n{done.stderr[-2000:]}")


def ask_all(config_path: Path, questions: list[tuple[str, str, list[str]]]) -> list[dict]:
    from rag_bot.chain import load_chain
    from rag_bot.config import load_config

    logging.disable(logging.WARNING)  # the reranker's "not available" line, once per load
    config = load_config(config_path)
    chain = load_chain(config)
    rows = []
    print(f"asking {len(questions)} questions", flush=True)
    for kind, question, expected in questions:
        reply = chain.invoke(question)
        quotes = [quote.text for quote in reply["evidence"]]
        said = " ".join([reply["answer"], *quotes]).lower()
        rows.append({
            "kind": kind, "question": question, "expected": expected, "reason": reply["reason"],
            "strength": reply["strength"], "judge": reply["judge"], "answer": reply["answer"], "quotes": quotes,
            "sources": [source.source for source in reply["sources"]],
            "right_quoted": bool(expected) and any(e.lower() in said for e in expected),
            "right_first": bool(expected and quotes) and any(e.lower() in quotes[0].lower() for e in expected),
        })
    return rows


def summarize(rows: list[dict]) -> dict[str, dict]:
    by_kind: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    summary = {}
    for kind, items in by_kind.items():
        n = len(items)
        share = lambda test: round(sum(1 for row in items if test(row)) / n, 4)  # noqa: E731
        figures = {"count": n, "declined": share(lambda row: row["reason"] == "out_of_scope"),
                   "not_covered": share(lambda row: row["reason"] == "not_covered")}
        if kind.startswith("answered"):
            figures["right_quoted"] = share(lambda row: row["right_quoted"])
            # what the user is told is the answer: not abstained, and the right sentence quoted
            figures["answered_right"] = share(lambda row: row["reason"] is None and row["right_quoted"])
            figures["right_first_quote"] = share(lambda row: row["right_first"])
        summary[kind] = figures
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", default=",".join(PACKAGES), help="installed packages whose READMEs to use")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "third_party_docs.json")
    parser.add_argument("--judge", metavar="MODEL", help="chat.judge_model to use ('none': no judge; default: the default)")
    args = parser.parse_args()
    questions = read_questions(args.questions)
    with tempfile.TemporaryDirectory(prefix="rag-bot-readmes-") as tmp:
        docs, config = Path(tmp) / "docs", Path(tmp) / "config.yaml"
        docs.mkdir()
        versions = write_readmes([p for p in args.packages.split(",") if p], docs)
        judge = "" if args.judge is None else f"chat: {{judge_model: {'null' if args.judge == 'none' else args.judge}}}\n"
        config.write_text(f"data_dir: {Path(tmp) / 'data'}\n{judge}", encoding="utf-8")
        rag_bot(config, "ingest", str(docs))
        rag_bot(config, "train-filter", "--from-corpus")
        rows = ask_all(config, questions)
    summary = summarize(rows)
    print(f"packages: {', '.join(f'{name} {version}' for name, version in versions.items())}")
    print(f"{'set':12} {'count':>5} {'declined':>9} {'not covered':>12} {'right quoted':>13} {'first quote':>12}"
          f" {'answered right':>15}")
    for kind, figures in summary.items():
        quoted = f"{figures['right_quoted']:.1%}" if "right_quoted" in figures else ""
        first = f"{figures['right_first_quote']:.1%}" if "right_first_quote" in figures else ""
        right = f"{figures['answered_right']:.1%}" if "answered_right" in figures else ""
        print(f"{kind:12} {figures['count']:>5} {figures['declined']:>9.1%} {figures['not_covered']:>12.1%} "
              f"{quoted:>13} {first:>12} {right:>15}")
    for row in rows:
        wrong = (row["reason"] is not None or not row["right_quoted"] if row["kind"].startswith("answered")
                 else row["reason"] is None)
        if wrong:
            print(f"  {row['kind']}: {row['question']} -> {row['reason'] or 'quoted'}: {row['answer'][:120]!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"packages": versions, "judge_model": args.judge, "summary": summary,
                                    "questions": rows}, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
