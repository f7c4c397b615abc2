"""`rag-bot eval conversations`' logic with a fake chain and retriever: turns asked in order with the
bot's own replies as history, recall of the labelled passages per query, overlap with the reference,
the groups. The real chain over MTRAG runs in the benchmark (BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest
from langchain_core.documents import Document

from rag_bot.errors import UsageError
from rag_bot.eval.conversations import (ask_conversation, read_conversations, recall_at, rouge_l, summarize,
                                        token_recall, write_passages)
from rag_bot.results import Retrieval

CONVERSATION = {
    "id": "c1", "domain": "cloud",
    "passages": [{"id": "p-1", "title": "Carthage", "text": "Carthage installs the SDK."},
                 {"id": "p-2", "text": "CocoaPods installs the SDK too."}],
    "turns": [
        {"turn": 1, "question": "How do I install the mobile SDK?", "answer": "Use CocoaPods or Carthage.",
         "rewrite": "How do I install the mobile SDK?", "answerability": "ANSWERABLE",
         "relevant_passage_ids": ["p-1", "p-2"]},
        {"turn": 2, "question": "carthage?", "answer": "Carthage installs the SDK.",
         "rewrite": "How do I install the SDK with Carthage?", "answerability": "ANSWERABLE",
         "relevant_passage_ids": ["p-1"]},
        {"turn": 3, "question": "and the price of bananas?", "answer": "The documents do not say.", "rewrite": None,
         "answerability": "UNANSWERABLE", "relevant_passage_ids": []},
    ]}


@pytest.fixture
def data(tmp_path):
    other = {**CONVERSATION, "id": "c2", "domain": "fiqa", "passages": [], "turns": CONVERSATION["turns"][:1]}
    (tmp_path / "mtrag_conversations.jsonl").write_text("\n".join(json.dumps(c) for c in (CONVERSATION, other)) + "\n")
    return tmp_path


class FakeChain:
    def __init__(self):
        self.inputs = []

    def invoke(self, input):
        self.inputs.append(input)
        question = input["question"]
        if "bananas" in question:
            return {"question": question, "answer": "That is not in these documents.", "reason": "out_of_scope"}
        searched = "How do I install the SDK with Carthage?" if question == "carthage?" else question
        return {"question": searched, "answer": "Carthage installs the SDK [1].", "reason": None}


class FakeRetriever:
    def __init__(self, order):
        self.order, self.asked = order, []

    def search(self, query, k=None):
        self.asked.append((query, k))
        sources = self.order.get(query, ["p-9.md"])
        return Retrieval([Document("x", metadata={"source": source}) for source in sources])


def test_conversations_are_read_by_domain(data):
    [cloud] = read_conversations(data, ["cloud"])
    assert cloud.id == "c1" and [t.turn for t in cloud.turns] == [1, 2, 3]
    assert cloud.turns[1].relevant == ("p-1",) and cloud.turns[2].rewrite is None
    assert len(read_conversations(data)) == 2
    with pytest.raises(UsageError, match="--domains: no conversations in govt"):
        read_conversations(data, ["govt"])
    with pytest.raises(UsageError, match="--data: .*nowhere.* not found"):
        read_conversations(data / "nowhere")


def test_each_passage_is_a_file_named_by_its_id(data, tmp_path):
    folder = write_passages(read_conversations(data, ["cloud"]), tmp_path / "docs")
    assert (folder / "p-1.md").read_text() == "# Carthage\n\nCarthage installs the SDK.\n"
    assert (folder / "p-2.md").read_text() == "CocoaPods installs the SDK too.\n"


def test_turns_are_asked_in_order_with_the_bots_own_replies_as_history(data):
    [conversation] = read_conversations(data, ["cloud"])
    chain = FakeChain()
    retriever = FakeRetriever({"How do I install the SDK with Carthage?": ["p-1.md", "p-1.md", "p-2.md"],
                               "carthage?": ["p-2.md"], "How do I install the mobile SDK?": ["p-2.md", "p-3.md"]})
    records = ask_conversation(chain, retriever, conversation)
    assert chain.inputs[1]["history"] == [{"role": "user", "content": "How do I install the mobile SDK?"},
                                          {"role": "assistant", "content": "Carthage installs the SDK [1]."}]
    assert len(chain.inputs[2]["history"]) == 4
    first, second, third = records
    assert first.recall == {"ours": 0.5, "dataset": 0.5, "raw": 0.5}
    assert second.searched == "How do I install the SDK with Carthage?"
    assert second.recall == {"ours": 1.0, "dataset": 1.0, "raw": 0.0}  # the raw "carthage?" misses
    assert third.declined and not third.abstained and third.recall == {}  # no labels: no recall
    figures = summarize(records)
    assert figures["later turns"]["turns"] == 2 and figures["later turns"]["declined"] == 0.5
    assert figures["later turns"]["rewritten"] == 0.5 and figures["first turns"]["rewritten"] == 0.0
    assert figures["later ANSWERABLE"]["recall@5 raw"] == 0.0 and figures["later UNANSWERABLE"]["declined"] == 1.0
    assert figures["later ANSWERABLE"]["token_recall"] == 1.0 and 0 < figures["all ANSWERABLE"]["rouge_l"] <= 1


def test_recall_counts_distinct_passages_in_the_first_k():
    retriever = FakeRetriever({"q": ["a.md", "a.md", "b.md", "c.md", "d.md", "e.md", "f.md"]})
    assert recall_at(retriever, "q", ("b", "f"), k=5) == 0.5 and retriever.asked == [("q", 15)]


def test_overlap_with_the_reference():
    assert token_recall("The SDK is installed with Carthage.", "Carthage installs the SDK") == pytest.approx(2 / 3)
    assert token_recall("anything", "") == 0.0
    assert rouge_l("Carthage installs the SDK", "Carthage installs the SDK") == pytest.approx(1.0)
    assert rouge_l("bananas", "Carthage installs the SDK") == 0.0


def test_the_bundled_follow_up_set_has_twenty_two_turn_conversations():
    from rag_bot.eval.followups import read_followups

    items = read_followups()
    assert len(items) >= 20 and all(item.expected for item in items)
    assert items[0].first == "What does the reranker do?" and items[0].question == "How do I turn it off?"


def test_a_follow_up_is_asked_with_the_first_reply_and_scored_on_its_phrases(tmp_path):
    from rag_bot.eval.followups import ask_followups, read_followups, summarize_followups
    from rag_bot.evidence import Quote

    path = tmp_path / "set.txt"
    path.write_text("# two conversations\nWhat does the reranker do?\tHow do I turn it off?\treranker.enabled: false\n"
                    "Where is my data?\tCan I delete it?\tdelete that folder | start afresh\n")

    class Chain:
        def __init__(self):
            self.inputs = []

        def invoke(self, input):
            self.inputs.append(input)
            question = input if isinstance(input, str) else input["question"]
            if question == "Can I delete it?":
                return {"question": question, "answer": "", "reason": "out_of_scope", "evidence": []}
            searched = "How do I turn off the reranker?" if question == "How do I turn it off?" else question
            return {"question": searched, "answer": "The documents say: [1]", "reason": None,
                    "evidence": [Quote(1, "Set reranker.enabled: false in config.yaml.", 0.8)]}

    chain = Chain()
    records = ask_followups(chain, read_followups(path))
    assert chain.inputs[1]["history"] == [{"role": "user", "content": "What does the reranker do?"},
                                          {"role": "assistant", "content": "The documents say: [1]"}]
    assert [r.answered for r in records] == [True, False]  # the phrase is in the quotes; a decline is a miss
    figures = summarize_followups(records)
    assert figures["answered"] == 0.5 and figures["declined"] == 0.5 and figures["rewritten"] == 0.5
    assert figures["misses"][0]["follow_up"] == "Can I delete it?"
    path.write_text("only one field\n")
    with pytest.raises(UsageError, match="--followups: line 1: expected three tab-separated fields"):
        read_followups(path)


@pytest.mark.parametrize("name", ["docs_followups.txt", "docs_followups_2.txt"])
def test_every_follow_up_set_asks_what_the_example_documents_answer(name):
    """Each follow-up's phrases: at least one is in examples/docs, so a miss is the bot's, not the set's."""
    import re
    from pathlib import Path

    from ingest.loaders import load
    from rag_bot.eval.followups import read_followups

    docs = Path(__file__).resolve().parents[2] / "examples" / "docs"
    text = re.sub(r"\s+", " ", " ".join(section.text for path in sorted(docs.iterdir()) for section in load(path))).lower()
    items = read_followups(Path(__file__).resolve().parents[2] / "rag_bot" / "eval" / "data" / name)
    assert len(items) >= 20
    missing = [(item.question, item.expected) for item in items
               if not any(phrase.lower() in text for phrase in item.expected)]
    assert missing == []
