"""The ONNX Runtime backend of the bi-encoder: the same vectors as torch float32, exported once and
reused, exported again when the model changes; `auto` picks torch where bf16 is native."""

from __future__ import annotations

import json
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
def test_the_export_leaves_the_torch_model_as_it_was(tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    from rag_bot.onnx_backend import OnnxEncoder

    path = resolve_model_path(EmbeddingConfig().model, "test")
    model = SentenceTransformer(path, device="cpu")
    model[0].auto_model.set_attn_implementation("sdpa")  # traced as eager attention (faster in onnxruntime), then put back
    encoder = OnnxEncoder(model, tmp_path, path)
    config = model[0].auto_model.config
    assert config._attn_implementation == "sdpa"
    sample = texts()[:12]
    assert float((encoder.encode(sample, 4) * model.encode(sample, normalize_embeddings=True)).sum(axis=1).min()) > 0.9999


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


def test_int8_needs_the_onnx_backend():
    from pydantic import ValidationError

    from rag_bot.config import RerankerConfig

    with pytest.raises(ValidationError, match="quantize: int8 runs on the onnx backend"):
        EmbeddingConfig(backend="torch", quantize="int8")
    with pytest.raises(ValidationError, match="quantize: int8 runs on the onnx backend"):
        RerankerConfig(backend="torch", quantize="int8")
    assert LocalEmbeddings(EmbeddingConfig(quantize="int8")).backend == "onnx"  # auto: int8 implies onnx


@pytest.mark.slow
def test_int8_is_used_only_within_its_cosine_bound(tmp_path: Path, monkeypatch, caplog):
    import rag_bot.onnx_backend as onnx_backend

    sample = texts()
    torch32 = LocalEmbeddings(EmbeddingConfig(backend="torch", precision="float32")).encode(sample)
    config = EmbeddingConfig(backend="onnx", quantize="int8", export_dir=tmp_path / "onnx")
    int8 = LocalEmbeddings(config)
    assert int8.encoder == "onnx int8"
    vectors = int8.encode(sample)
    cosines = (vectors * torch32).sum(axis=1)
    short = np.array([len(int8.tokenizer.encode(text).ids) < 16 for text in sample])
    assert short.any() and np.allclose(cosines[short], 1.0, atol=1e-4)  # short texts stay float32
    # int8 scales activations per batch: passages measured 0.9946-0.998 here, the probes' check 0.9964
    assert 0.994 <= float(cosines[~short].min()) < 0.99999  # quantised: close to, not equal to, float32
    folder = next((tmp_path / "onnx").glob("*/model.int8-v*.onnx")).parent
    check = next(folder.glob("int8-v*.json")).read_text()
    assert json.loads(check)["min_cosine"] >= 0.995

    # A bound the model cannot meet: float32, with one warning naming the key.
    monkeypatch.setattr(onnx_backend, "INT8_MIN_COSINE", 0.99999999)
    strict = LocalEmbeddings(config)
    assert strict.encoder == "onnx float32"
    assert "embedding.quantize: int8 moves this model too far from float32" in caplog.text
    assert float((strict.encode(sample) * torch32).sum(axis=1).min()) > 0.9999
    assert next(folder.glob("int8-v*.json")).read_text() == check  # measured once, kept


@pytest.mark.slow
def test_int8_cross_encoder_scores_stay_close(tmp_path: Path, cross_encoder_dir):
    from rag_bot.config import RerankerConfig
    from rag_bot.models import load_cross_encoder

    pairs = [("where does rag-bot keep its data?", text) for text in texts()]
    float32 = load_cross_encoder(RerankerConfig(model=str(cross_encoder_dir), backend="torch"))
    int8 = load_cross_encoder(RerankerConfig(model=str(cross_encoder_dir), quantize="int8",
                                             export_dir=tmp_path / "onnx"))
    assert int8.precision == "int8"
    expected = float32.predict(pairs, batch_size=16, show_progress_bar=False)
    got = int8.predict(pairs, batch_size=16, show_progress_bar=False)
    assert float(np.max(np.abs(got - expected))) <= 0.05
