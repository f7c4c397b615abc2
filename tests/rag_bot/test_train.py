"""Fine-tuning: pair files, a few training steps of each model on tiny data with the real MiniLM
weights, the saved folders loading through config, resuming, and synthetic pairs."""

from __future__ import annotations

import json
import subprocess

import pytest

from rag_bot.errors import InputError
from rag_bot.train.pairs import Pair, beir_pairs, read_pairs, split_pairs
from tests.conftest import EXAMPLE_DOCS, RAG_BOT
from tests.rag_bot.test_eval import MORE, QUERIES, TOPICS, write_beir

# more questions per topic, so the tiny BEIR folder has a train split worth a few steps
TRAIN_QUERIES = {
    "t1": ("What comes out of a volcano's crater?", "d1"),
    "t2": ("Where is lava stored before an eruption?", "d1"),
    "t3": ("What gas do leaves give off in sunlight?", "d2"),
    "t4": ("Why are leaves green?", "d2"),
    "t5": ("How often does the tide come in?", "d3"),
    "t6": ("What are spring tides?", "d3"),
    "t7": ("What do booster shots do?", "d4"),
    "t8": ("How does a vaccine train the body?", "d4"),
    "t9": ("What does yeast do to dough?", "d5"),
    "t10": ("Why knead bread dough?", "d5"),
    "t11": ("What does a seismograph record?", "d6"),
    "t12": ("What slips along a fault line?", "d6"),
    "t13": ("Why do bees dance?", "d7"),
    "t14": ("Where do bees keep their honey?", "d7"),
    "t15": ("Why is a rainbow curved into colours?", "d8"),
    "t16": ("What is a double rainbow?", "d8"),
}


def write_beir_with_train(folder):
    write_beir(folder)
    with open(folder / "queries.jsonl", "a") as handle:
        for query_id, (text, _) in TRAIN_QUERIES.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in TRAIN_QUERIES.items()]
    (folder / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n")
    return folder


def run_cli(config_path, *args, timeout=900):
    return subprocess.run([RAG_BOT, "--config", str(config_path), *args], capture_output=True, text=True,
                          timeout=timeout)


# pair files


def test_pairs_read_from_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('query,passage,negative\n"How, exactly?","Like this.",\nWhy?,Because.,Not this.\n')
    assert read_pairs(csv_file) == [Pair("How, exactly?", "Like this."), Pair("Why?", "Because.", "Not this.")]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"query": "a?", "passage": "b", "extra": 1}\n\n{"query": "c?", "passage": "d", "negative": "e"}\n')
    assert read_pairs(jsonl) == [Pair("a?", "b"), Pair("c?", "d", "e")]


@pytest.mark.parametrize("name, text, message", [
    ("p.csv", "question,answer\nx,y\n", "p.csv: line 1: the header needs columns query and passage"),
    ("p.csv", "query,passage\nx,y\nz,\n", "p.csv: line 3: passage is empty or missing"),
    ("p.jsonl", '{"query": "x", "passage": "y"}\n{"query": "x", "passage": \n', "p.jsonl: line 2: invalid JSON"),
    ("p.jsonl", '{"query": "x", "passage": 3}\n', "p.jsonl: line 1: passage must be text, not int"),
    ("p.jsonl", '["x", "y"]\n', "p.jsonl: line 1: expected an object with query and passage"),
    ("p.txt", "x\ty\n", "p.txt: unknown pair file format '.txt'"),
    ("p.csv", "query,passage\n", "p.csv: no pairs"),
])
def test_malformed_pair_files_name_the_line_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_pairs(path)


def test_validation_holds_out_whole_queries(tmp_path):
    pairs = [Pair(f"q{i % 10}", f"p{i}") for i in range(40)]
    train, validation = split_pairs(pairs, 0.2, seed=1)
    assert len({p.query for p in validation}) == 2
    assert not {p.query for p in train} & {p.query for p in validation}
    assert len(train) + len(validation) == 40
    with pytest.raises(InputError, match="too few distinct queries"):
        split_pairs([Pair("only", "one")], 0.5)


def test_beir_pairs_come_from_the_positive_judgements_of_the_split(tmp_path):
    folder = write_beir_with_train(tmp_path / "tiny")
    pairs = beir_pairs(folder, "test")
    assert len(pairs) == 6  # q6 also judges d1, with score 0: not a pair
    assert Pair(QUERIES["q1"][0], f"{TOPICS['d1'][0]}\n\n{TOPICS['d1'][1]} {MORE['d1']}") in pairs
    assert len(beir_pairs(folder, "train")) == len(TRAIN_QUERIES)
    with pytest.raises(InputError, match="--split takes one of: test, train"):
        beir_pairs(folder, "dev")


# training, through the CLI as a user runs it


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    folder = write_beir_with_train(root / "tiny")
    config = root / "config.yaml"
    config.write_text(f"data_dir: {root / 'data'}\nreranker: {{enabled: false}}\nfilter: {{enabled: false}}\n")
    return root, folder, config


def test_embedder_trains_a_few_steps_and_loads_through_config(tiny_beir):
    root, folder, config = tiny_beir
    out = root / "embedder"
    done = run_cli(config, "train", "embedder", "--beir", str(folder), "--out", str(out),
                   "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["completed"] and report["steps"] >= 3  # 12 training pairs, 4 a step, no duplicate in a batch
    assert report["validation_queries"] == 4
    assert set(report["before"]) == set(report["after"]) == {"ndcg@10", "mrr@10", "recall@10", "recall@100"}
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()
    from rag_bot.config import EmbeddingConfig
    from rag_bot.models import LocalEmbeddings

    sentence = ["Why does dough rise in the oven?"]
    tuned_vector = LocalEmbeddings(EmbeddingConfig(model=str(out))).encode(sentence)[0]
    base_vector = LocalEmbeddings(EmbeddingConfig()).encode(sentence)[0]
    assert float(tuned_vector @ base_vector) > 0.9 and abs(tuned_vector - base_vector).max() > 1e-5  # moved, not far

    # the trained model as embedding.model: eval gets its own collection; no code change
    tuned = root / "tuned.yaml"
    tuned.write_text(config.read_text() + f"embedding: {{model: {out}}}\n")
    evaluated = run_cli(tuned, "eval", "retrieval", "--dataset", str(folder), "--pipelines", "dense", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["pipelines"]["dense"]["ndcg@10"] > 0.5

    # switching a store to it is one command: the re-ingest also retrains the corpus-trained scope filter
    store = root / "store.yaml"
    store.write_text(f"data_dir: {root / 'store'}\nreranker: {{enabled: false}}\n")
    for command in (["ingest", str(EXAMPLE_DOCS), "--no-progress"], ["train-filter", "--from-corpus"]):
        assert run_cli(store, *command).returncode == 0
    switched = root / "switched.yaml"
    switched.write_text(store.read_text() + f"embedding: {{model: {out}}}\n")
    refused = run_cli(switched, "search", "How do I ingest a folder of documents?")
    assert refused.returncode == 2 and "--rebuild" in refused.stderr
    rebuilt = run_cli(switched, "ingest", str(EXAMPLE_DOCS), "--rebuild", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    scope = json.loads(rebuilt.stdout)["filter"]
    assert scope["retrained"] and scope["trained_on"] == "corpus"
    assert json.loads((root / "store" / "filters" / "rag_bot.json").read_text())["embedding_model"] == str(out)
    searched = run_cli(switched, "search", "How do I ingest a folder of documents?", "--json")
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["results"]
    assert json.loads(run_cli(switched, "ingest", str(EXAMPLE_DOCS), "--json").stdout).get("filter") is None

    # the same command again: the folder holds this job done, nothing is trained
    again = run_cli(config, "train", "embedder", "--beir", str(folder), "--out", str(out),
                    "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["train_seconds"] == report["train_seconds"]
    # other settings into the same folder: refused in one line
    other = run_cli(config, "train", "embedder", "--beir", str(folder), "--out", str(out), "--epochs", "2")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"error: --out {out}: holds a model from other pairs or settings ({folder} (train qrels)); "
        "choose another --out folder or delete this one"]


def test_reranker_trains_with_mined_negatives_and_loads_through_config(tiny_beir):
    root, folder, config = tiny_beir
    out = root / "reranker"
    done = run_cli(config, "train", "reranker", "--beir", str(folder), "--out", str(out), "--negatives", "2",
                   "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["completed"] and report["train_pairs"] == 12 and report["steps"] == 3  # 12 queries, 4 a step
    assert report["extra"]["train_queries_with_a_positive_among_candidates"] == 12
    assert set(report["before"]) == set(report["after"]) == {"ndcg@10", "mrr@10", "map"}
    from rag_bot.config import RerankerConfig
    from rag_bot.models import load_cross_encoder

    scores = load_cross_encoder(RerankerConfig(model=str(out))).predict(
        [("Why does dough rise?", "Yeast ferments the sugars in dough."), ("Why does dough rise?", "Bees dance.")])
    assert len(scores) == 2 and all(0 <= float(score) <= 1 for score in scores)

    tuned = root / "reranked.yaml"
    tuned.write_text(f"data_dir: {root / 'data'}\nfilter: {{enabled: false}}\n"
                     f"reranker: {{enabled: true, model: {out}}}\n")
    evaluated = run_cli(tuned, "eval", "retrieval", "--dataset", str(folder), "--pipelines", "dense+rerank", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert 0 <= json.loads(evaluated.stdout)["pipelines"]["dense+rerank"]["ndcg@10"] <= 1


def test_mined_negatives_leave_out_every_chunk_of_the_positive_passage():
    from langchain_core.documents import Document

    from rag_bot.train.reranker import mine, ranking_rows

    passage = "Title\n\nFirst part of the text. Second part of the text."

    class Retriever:
        def candidates(self, query):
            return [Document("unrelated one"), Document("Second part of   the text."), Document("unrelated two"),
                    Document("Title First part"), Document("unrelated three")]

    mined = mine([Pair("q?", passage, "given negative")], Retriever(), progress=False)
    assert mined[0].positives == ["Second part of   the text."]  # the best-ranked chunk of the passage
    rows, short = ranking_rows(mined, negatives=2)  # the pair file's negative first, then the mined ones
    assert short == 0 and rows == {"query": ["q?"], "positive": ["Second part of   the text."],
                                   "negative_1": ["given negative"], "negative_2": ["unrelated one"]}
    rows, short = ranking_rows(mined, negatives=5)  # only 4 negatives: the query is left out, and counted
    assert short == 1 and rows["query"] == []


def test_an_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from rag_bot.config import Config
    from rag_bot.train import embedder, run
    from rag_bot.train.run import TrainSettings

    pairs = [Pair(f"question {i}: what about {topic}?", f"{topic} is described here, item {i}.")
             for i, topic in enumerate(["tides", "bees", "bread", "lava", "rainbows", "vaccines"] * 4)]
    settings = TrainSettings(epochs=1, batch_size=4, val_fraction=0, progress=False)
    real = run.quiet_progress

    class Stop(Exception):
        pass

    def interrupting(trainer):
        from transformers.trainer_callback import TrainerCallback

        class After(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                raise Stop  # as if the user pressed Ctrl+C after the first checkpoint

        real(trainer)
        trainer.add_callback(After())

    monkeypatch.setattr(run, "quiet_progress", interrupting)
    config = Config().embedding
    with pytest.raises(Stop):
        embedder.train_embedder(pairs, config, tmp_path / "out", settings)
    assert list((tmp_path / "out" / "checkpoints").glob("checkpoint-3"))
    monkeypatch.setattr(run, "quiet_progress", real)
    report = embedder.train_embedder(pairs, config, tmp_path / "out", settings)
    assert report.resumed_from.endswith("checkpoint-3") and report.steps == 6 and report.completed


# synthetic pairs


class QuestionLLM:
    """Writes 'What does <first words of the passage> mean?' (a stand-in for the local LLM)."""

    def __init__(self):
        self.prompts = []

    def stream(self, system, user, *, max_tokens=None, stop=None, config=None):
        self.prompts.append(user)
        passage = user.rsplit("Passage:", 1)[1].split("\nQuestion:")[0].split()
        yield f" What does {' '.join(passage[:6])} mean?\nmore text"


def test_make_pairs_keeps_only_questions_whose_chunk_is_retrieved(examples_config, minilm, tmp_path):
    from rag_bot.retriever import load_retriever
    from rag_bot.train.synthetic import load_template, make_pairs

    retriever = load_retriever(examples_config, embeddings=minilm)
    llm = QuestionLLM()
    stats = make_pairs(llm, retriever, tmp_path / "pairs.jsonl", count=12, top=20, template=load_template(None))
    assert stats.sampled == 12 and len(llm.prompts) == 12
    assert stats.written + stats.not_retrieved + stats.duplicate + stats.no_question == 12
    assert stats.written >= 6  # a question made of the chunk's own words finds it
    rows = read_pairs(tmp_path / "pairs.jsonl")
    assert len(rows) == stats.written and all(row.query.endswith("mean?") for row in rows)
    assert not (tmp_path / "pairs.jsonl.partial").exists()

    class OffTopicLLM:
        def stream(self, system, user, **kwargs):
            yield "What is the capital of France?"

    stats = make_pairs(OffTopicLLM(), retriever, tmp_path / "off.jsonl", count=12, top=1, template=load_template(None))
    assert stats.written <= 1 and stats.not_retrieved + stats.duplicate >= 11  # dropped (a repeat once kept is a duplicate)


def test_make_pairs_with_the_real_gguf_through_the_cli(chat_config_file, tmp_path):
    out = tmp_path / "pairs.jsonl"
    done = run_cli(chat_config_file, "train", "make-pairs", "--out", str(out), "--count", "4", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["sampled"] == 4 and stats["written"] == len(out.read_text().splitlines())
    for row in map(json.loads, out.read_text().splitlines()):
        assert row["query"].endswith("?") and row["passage"] and row["source"]


def test_clean_question_takes_one_question_or_nothing():
    from rag_bot.train.synthetic import clean_question

    assert clean_question(" Question: How do I reset it? It is easy.") == "How do I reset it?"
    assert clean_question("reset") is None
    assert clean_question("This is a statement of fact.") is None
    assert clean_question("") is None


def test_bad_pair_file_through_the_cli_is_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "a?", "passage": "b"}\n{"query": "c?"}\n')
    for model in ("embedder", "reranker"):
        done = run_cli(config, "train", model, "--pairs", str(pairs), "--out", str(tmp_path / model))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"error: {pairs}: line 2: passage is empty or missing"]
    pairs.write_text('{"query": "a?", "passage": "b"}\n')
    done = run_cli(config, "train", "embedder", "--pairs", str(pairs), "--out", str(tmp_path / "e"), "--epochs", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == ["error: --epochs: must be 1 or more, not 0"]


def test_reranker_trains_from_the_corpus_without_labels(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("data_dir: data\nreranker: {enabled: false}\nfilter: {enabled: false}\n")
    assert run_cli(config, "ingest", str(EXAMPLE_DOCS), "--no-progress").returncode == 0
    out = tmp_path / "corpus-reranker"
    done = run_cli(config, "train", "reranker", "--from-corpus", "--questions", "40", "--out", str(out),
                   "--negatives", "2", "--batch-size", "8", "--val-fraction", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["completed"] and report["extra"]["pairs"] == "40 questions generated from collection 'rag_bot'"
    assert 20 <= report["train_pairs"] <= 32 and report["validation_queries"] == 8
    assert set(report["before"]) == set(report["after"]) == {"ndcg@10", "mrr@10", "map"}
    assert (out / "config.json").exists()
    few = run_cli(config, "train", "reranker", "--from-corpus", "--questions", "5", "--out", str(out))
    assert few.returncode == 2 and few.stderr == "error: --questions: must be 10 or more\n"
