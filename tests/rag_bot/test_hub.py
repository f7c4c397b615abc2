"""Model references that name the hub, without a network: parsing, config paths, offline messages."""

import pytest

from rag_bot.config import load_config
from rag_bot.errors import ModelError
from rag_bot.hub import find_model, split_hub_file
from rag_bot.llm import load_llm


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_hf_references_are_kept_as_written_and_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("llm: {model_path: 'hf:acme/tiny-llm/sub/tiny.gguf'}\n")
    assert load_config(path).llm.model_path == "hf:acme/tiny-llm/sub/tiny.gguf"  # not made a local path
    assert split_hub_file("hf:acme/tiny-llm/sub/tiny.gguf") == ("acme/tiny-llm", "sub/tiny.gguf")
    with pytest.raises(ModelError, match=r"^llm.model_path: 'hf:acme/tiny.gguf' is not of the form hf:OWNER/REPO/FILE"):
        split_hub_file("hf:acme/tiny.gguf")


def test_an_uncached_model_offline_is_one_line_naming_the_way_out(tmp_path, offline):
    path = tmp_path / "c.yaml"
    path.write_text("llm: {model_path: 'hf:acme/tiny-llm/tiny.gguf'}\n")
    with pytest.raises(ModelError) as caught:
        load_llm(load_config(path)).model_file()
    message = str(caught.value)
    assert message.startswith("llm.model_path: hf:acme/tiny-llm/tiny.gguf: not in the Hugging Face cache, and "
                              "HF_HUB_OFFLINE is set; run `rag-bot models fetch`") and "\n" not in message
    assert find_model("a/b/c", "reranker.model").why.startswith("no such folder")
    assert find_model("acme/model", "reranker.model").kind == "missing"
    assert find_model("package:no_such_module_here", "embedding.model").why.startswith(
        "'package:no_such_module_here' needs the Python package")
