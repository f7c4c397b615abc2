"""Prompt templates are files checked at start-up: a missing file or variable is one clear line."""

from __future__ import annotations

import shutil

import pytest

from rag_bot.errors import ConfigError
from rag_bot.prompting import BUNDLED_DIR, TEMPLATES, load_prompts


@pytest.fixture
def prompts_copy(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    for name in TEMPLATES:
        shutil.copy(BUNDLED_DIR / name, folder / name)
    return folder


def test_bundled_prompts_load_and_fill_in():
    prompts = load_prompts()
    answer = prompts.format("answer", context="[1] a.md\ntext", question="why?")
    assert "[1] a.md\ntext" in answer and "<question>why?</question>" in answer
    assert "{" not in prompts.format("condense", history="User: hi", question="and then?")
    assert prompts.decline and prompts.nothing_found and prompts.system


def test_an_edited_prompt_is_read_from_the_folder(prompts_copy):
    (prompts_copy / "decline.txt").write_text("Only documents, please ({question}).\n")
    assert load_prompts(prompts_copy).format("decline", question="pizza?") == "Only documents, please (pizza?)."


@pytest.mark.parametrize(("name", "text", "message"), [
    ("answer.txt", "Passages: {context}\nAnswer:", r"answer.txt: the template must contain \{question\}$"),
    ("condense.txt", "{history} {question} {user}", r"condense.txt: unknown variable \{user\}; this template may use: "
                                                    r"\{history\}, \{question\}"),
    ("system.txt", "Use JSON like {\"a\": 1}", r"system.txt: unknown variable"),
    ("answer.txt", "{context} {question", r"answer.txt: .*write a literal brace as \{\{ or \}\}"),
])
def test_a_broken_template_names_the_file_and_the_problem(prompts_copy, name, text, message):
    (prompts_copy / name).write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_prompts(prompts_copy)
    assert "\n" not in str(caught.value) and str(prompts_copy / name) in str(caught.value)


def test_a_missing_template_says_which_and_where_to_copy_it_from(prompts_copy):
    (prompts_copy / "nothing_found.txt").unlink()
    with pytest.raises(ConfigError, match=r"nothing_found.txt: prompt template missing; copy it from"):
        load_prompts(prompts_copy)
