"""The ONNX Runtime backend of the bi-encoder: the same vectors as torch float32, exported once and
reused, exported again when the model changes; `auto` picks torch where bf16 is native."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rag_bot.config import EmbeddingConfig
from rag_bot.models import LocalEmbeddings, resolve_model_path
from tests.conftest import EXAMPLE_DOCS


@pytest.mark.parametrize("native, device, precision, expected", [
    (True, "cpu", "auto", "torch"), (False, "cpu", "auto", "onnx"), (True, "cpu", "float32", "onnx"),
    (False, "cpu", "bfloat16", "torch")])
def test_auto_picks_torch_where_bf16_is_native_else_onnx(monkeypatch, native, device, precision, expected):
    import rag_bot.models as models

    monkeypatch.setattr(models, "native_bf16", lambda: native)
    embeddings = LocalEmbeddings(EmbeddingConfig(device=device, precision=precision))
    assert embeddings.backend == expected
    assert embeddings.describe_backend().startswith(expected) and "embedding.backend: auto" in embeddings.describe_backend()
    assert LocalEmbeddings(EmbeddingConfig(backend="torch")).backend == "torch"
    assert LocalEmbeddings(EmbeddingConfig(backend="onnx")).backend == "onnx"


def texts() -> list[str]:
    words = " ".join(path.read_text(errors="ignore") for path in EXAMPLE_DOCS.glob("*.md")).split()
    # short, middling and longer than the model's 256 tokens (truncated the same way by both)
    return [" ".join(words[start:start + size]) for size in (3, 40, 180, 400) for start in range(0, 2000, 250)]


@pytest.mark.slow
def test_onnx_vectors_match_torch_float32_and_the_export_is_reused(tmp_path: Path):
    sample = texts()
    torch32 = LocalEmbeddings(EmbeddingConfig(backend="torch", precision="float32")).encode(sample)
    config = EmbeddingConfig(backend="onnx", export_dir=tmp_path / "onnx")
    onnx = LocalEmbeddings(config)
    for batch in (1, 7, 64):
        vectors = onnx.encode(sample, batch_size=batch)
        assert vectors.shape == torch32.shape and vectors.dtype == np.float32
        assert float((vectors * torch32).sum(axis=1).min()) > 0.9999
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    exported = list((tmp_path / "onnx").glob("*/model.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    again = LocalEmbeddings(config)
    assert np.allclose(again.encode(sample[:3]), onnx.encode(sample[:3]), atol=1e-6)
    assert exported[0].stat().st_mtime_ns == stamp  # reused, not exported again
    assert again.embed_query("where does rag-bot keep its data?") == pytest.approx(
        onnx.encode(["where does rag-bot keep its data?"])[0].tolist(), abs=1e-6)

    changed = tmp_path / "model-copy"
    shutil.copytree(resolve_model_path(config.model, "test"), changed)
    (changed / "README.md").write_text("a changed model folder")
    LocalEmbeddings(EmbeddingConfig(model=str(changed), backend="onnx", export_dir=tmp_path / "onnx")).encode(["x"])
    assert len(list((tmp_path / "onnx").glob("*/model.onnx"))) == 2  # a new fingerprint: exported anew


@pytest.mark.slow
def test_onnx_cross_encoder_scores_match_torch(tmp_path: Path, cross_encoder_dir):
    from rag_bot.config import RerankerConfig
    from rag_bot.models import load_cross_encoder
    from rag_bot.onnx_backend import OnnxCrossEncoder

    sample = texts()
    pairs = [("where does rag-bot keep its data?", text) for text in sample]
    torch_model = load_cross_encoder(RerankerConfig(model=str(cross_encoder_dir), backend="torch"))
    onnx_model = load_cross_encoder(RerankerConfig(model=str(cross_encoder_dir), backend="onnx",
                                                   export_dir=tmp_path / "onnx"))
    assert isinstance(onnx_model, OnnxCrossEncoder) and not isinstance(torch_model, OnnxCrossEncoder)
    expected = torch_model.predict(pairs, batch_size=16, show_progress_bar=False)
    got = onnx_model.predict(pairs, batch_size=16, show_progress_bar=False)
    assert got.shape == expected.shape == (len(pairs),)
    assert np.allclose(got, expected, atol=1e-4)  # so the same order, up to ties closer than that
    assert float(np.ptp(expected)) > 1e-3  # the scores differ: the comparison means something
    assert len(list((tmp_path / "onnx").glob("*-reranker/model.onnx"))) == 1
