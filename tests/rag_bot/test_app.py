"""The application object: its jobs share one embedder, an ingest reports what the scope filter went
through, and each collection has one Documents shelf."""

import pytest

from rag_bot.app import App
from rag_bot.filter import filter_path
from rag_bot.filter_training import fit_filter
from tests.conftest import FakeEmbeddings, make_config

SETTINGS = dict(embedding={"model": "fake"}, reranker={"enabled": False})


@pytest.mark.slow
def test_an_ingest_through_the_app_and_what_it_did_to_the_filter(tmp_path, docs_copy, minilm):
    config = make_config(tmp_path, **SETTINGS)
    app = App(config, embeddings=minilm)
    dry = app.ingest(docs_copy, dry_run=True, progress=False)
    assert dry.report.dry_run and dry.filter is None and "filter" not in dry.to_json()
    first = app.ingest(docs_copy, progress=False)
    assert first.changed and "getting-started.md" in first.report.added and first.filter is None
    assert first.summary() == first.report.summary()  # no filter: nothing more to say
    fit_filter(config, app.embeddings)  # a filter trained from the corpus, for the old model
    assert filter_path(config).exists()
    other = make_config(tmp_path, **{**SETTINGS, "embedding": {"model": "another-fake"}})
    rebuilt = App(other, embeddings=minilm).ingest(docs_copy, rebuild=True, progress=False)
    assert rebuilt.filter["retrained"] is True and rebuilt.filter["trained_on"] == "corpus"  # one command
    assert rebuilt.to_json()["filter"] == rebuilt.filter and rebuilt.filter["message"] in rebuilt.summary()


def test_the_app_shares_its_embedder_and_keeps_one_shelf_per_collection(tmp_path):
    app = App(make_config(tmp_path, **SETTINGS), embeddings=FakeEmbeddings(size=16))
    assert app.service.embeddings is app.embeddings and app.service is app.service
    assert app.documents() is app.documents("rag_bot") is not app.documents("notes")
    assert app.documents("notes").config.store.collection == "notes"
    app.close()
