"""The writer's stream tidied into an answer with its evidence (`rag_bot.citing`): no model needed."""

import re

import pytest

from rag_bot.citing import recited, with_citations
from tests.rag_bot.test_chain import DOCS, FakeLLM, FakeRetriever, chain_with

PASSAGES = ["rag-bot reads Markdown, PDF and Word files. No GPU is needed.",
            "Set reranker.enabled: false in config.yaml to turn the reranker off."]


def tidied(text: str, size: int) -> str:
    return "".join(with_citations([text[i:i + size] for i in range(0, len(text), size)], PASSAGES))


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_an_opener_about_the_passages_is_dropped_and_its_reference_moved_to_the_end_of_its_sentence(size):
    """However the model's pieces are cut, "The passage [1] states that X." reads "X [1]."."""
    assert tidied("The passage [1] states that it reads Markdown, PDF and Word files.", size) == \
        "It reads Markdown, PDF and Word files [1]."
    assert tidied("According to passage [2], you set reranker.enabled: false. It is quick.", size) == \
        "You set reranker.enabled: false [2]. It is quick."
    assert tidied("The passage [1] states that it reads PDF. The passage [2] confirms this by stating that "
                  "config.yaml holds the setting.", size) == "It reads PDF [1]. config.yaml holds the setting [2]."
    assert tidied('The passage [1] states that "No GPU is needed." Nothing more.', size) == \
        '"No GPU is needed." [1] Nothing more.'


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_sentence_that_cites_nothing_gets_the_passage_holding_most_of_its_words(size):
    assert tidied("To turn the reranker off, set `reranker.enabled: false` in `config.yaml`. It also reads PDF "
                  "and Word files.", size) == ("To turn the reranker off, set `reranker.enabled: false` in "
                                               "`config.yaml` [2]. It also reads PDF and Word files [1].")
    # a sentence no passage holds, one that already cites, and the model saying the documents don't answer
    assert tidied("The weather is fine today. It reads PDF [2].", size) == "The weather is fine today. It reads PDF [2]."
    for text in ("The documents don't say how to add Word files.", "The documents do not explicitly state how Word "
                 "files are read."):
        assert tidied(text, size) == text
    # a line break inside a sentence is no end of it
    assert tidied("Later runs only\nembed what changed.", size) == "Later runs only\nembed what changed."
    assert tidied("It reads Markdown, PDF\nand Word files.\n\nSet reranker.enabled: false in config.yaml", size) == \
        "It reads Markdown, PDF\nand Word files [1].\n\nSet reranker.enabled: false in config.yaml [2]"
    # each step of a list on its own; nothing inside a code block
    assert tidied("Steps:\n1. Set reranker.enabled: false\n2. Save config.yaml", size) == \
        "Steps:\n1. Set reranker.enabled: false [2]\n2. Save config.yaml [2]"
    assert tidied("Run:\n```\nset reranker.enabled: false in config.yaml\n```\nThat turns the reranker off.", size) == \
        "Run:\n```\nset reranker.enabled: false in config.yaml\n```\nThat turns the reranker off [2]."


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_sentences_that_only_begin_like_an_opener_are_kept(size):
    for text in ("The passages are cut at headings.", "The passage [2] is about Word files.", "The reranker is off.",
                 'The passage [2] also mentions "Formats", which lists Word files.',
                 "These settings e.g. the reranker are kept at 0.5 of the default.", "Yes.", ""):
        assert re.sub(r" \[\d\](?=\.$)", "", tidied(text, size)) == text  # a reference may be added at the end


def test_the_chain_streams_the_answer_without_the_opener_and_quotes_the_passage_it_moved():
    llm = FakeLLM("The passage [2] states that chunks are about two hundred tokens long.")
    result = chain_with(FakeRetriever(DOCS), llm).invoke("How long are chunks?")
    assert result["answer"] == "Chunks are about two hundred tokens long [2]."
    assert [quote.n for quote in result["evidence"]] == [2]


def test_a_claim_cited_to_a_passage_without_its_facts_cites_the_passage_that_holds_them():
    passages = ["rag-bot needs about 3 GB of free disk space and Python 3.10.",
                "Set `reranker.enabled: false` in config.yaml to turn the reranker off.",
                "The reranker is a cross-encoder; set reranker.top_n to keep fewer passages."]
    answer = "It needs about 3 GB of disk [2]. Turn it off with `reranker.enabled: false` [2]."
    assert recited(answer, passages) == "It needs about 3 GB of disk [1]. Turn it off with `reranker.enabled: false` [2]."
    # of two passages holding the facts, the one holding more of the claim's words
    assert recited("Turn the reranker off in config.yaml [1].", passages) == "Turn the reranker off in config.yaml [2]."
    untouched = ["It needs Ollama [1].",  # no passage holds the fact: the verifier says so, nothing is moved
                 "It needs about 3 GB [1].",  # already right
                 "Steps:\n1. Install Python 3.10 [1].\n2. Run it [1].",  # a step's number is no fact to find
                 "It is local [7]."]  # a number no passage has
    assert [recited(text, passages) for text in untouched] == untouched


def test_a_written_answer_citing_the_wrong_passage_stands_with_its_citation_moved():
    from rag_bot.events import Recited
    from rag_bot.reply import terminal_text

    chain = chain_with(FakeRetriever(DOCS), FakeLLM("rag-bot ingest DIR walks a folder recursively [2]."),
                       answer_mode="auto")
    events = list(chain.stream("How do I ingest a folder?"))
    assert [event.text for event in events if isinstance(event, Recited)] == [
        "rag-bot ingest DIR walks a folder recursively [1]."]
    result = chain.invoke("How do I ingest a folder?")
    assert result["answer"] == "rag-bot ingest DIR walks a folder recursively [1]." and result["grounded"]
    assert result["verification"]["recited"] is True and [quote.n for quote in result["evidence"]] == [1]
    printed = "".join(terminal_text(iter(events)))
    assert printed.count("[1].") == 1 and "passage that says it:\nrag-bot ingest DIR walks a folder recursively [1]." in printed
    wrong = chain_with(FakeRetriever(DOCS), FakeLLM("rag-bot ingest DIR uses Ollama [2]."), answer_mode="auto")
    result = wrong.invoke("How do I ingest a folder?")
    assert result["grounded"] is False and result["verification"]["recited"] is False
