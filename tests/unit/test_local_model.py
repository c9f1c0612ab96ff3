"""The local embedding model's 8-bit file (vector_stores/embeddings.derive_model): made once from
the shipped file, integer matrix products, no NaN guards, and vectors that answer the probe texts
as pinned and stay close to the shipped file's own float32 ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assistantd.vector_stores import embeddings
from tests.support.server import MODELS_DIR


@pytest.fixture(scope="module")
def derived():
    return embeddings.derive_model(MODELS_DIR)


def test_the_derived_file_multiplies_in_8_bit_integers_and_has_no_nan_guard(derived):
    import onnx

    ops = {node.op_type for node in onnx.load(str(derived)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}, ops
    assert "IsNaN" not in ops
    source_ops = {node.op_type for node in onnx.load(str(embeddings.source_model())).graph.node}
    assert "IsNaN" in source_ops and not source_ops & {"MatMulInteger", "DynamicQuantizeMatMul"}


def test_it_is_made_once_and_then_reused(derived):
    made = derived.stat().st_mtime_ns
    assert embeddings.derive_model(MODELS_DIR) == derived
    assert derived.stat().st_mtime_ns == made
    assert not [p for p in MODELS_DIR.iterdir() if p.name.startswith(".derive-")]  # no work left behind


def test_it_answers_the_probe_texts_as_pinned(derived):
    assert embeddings.LocalEmbedder(MODELS_DIR, threads=1).warm_up() >= embeddings.PROBE_AGREEMENT


def _shipped_vectors(texts: list[str]) -> np.ndarray:
    """The shipped file's own float32 vectors, computed here without the embedder's code."""
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(embeddings.TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(embeddings.LOCAL_MAX_TOKENS)
    session = onnxruntime.InferenceSession(str(embeddings.source_model()), providers=["CPUExecutionProvider"])
    out = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                    "token_type_ids": np.zeros_like(ids)})[0][0]
        vector = hidden.mean(axis=0)
        out.append(vector / np.linalg.norm(vector))
    return np.array(out)


def test_its_vectors_stay_close_to_the_shipped_files_and_rank_alike(derived):
    probe = json.loads(embeddings.PROBE_FILE.read_text())
    texts = [item["text"] for item in probe] + ["Where can I read a file's lines in Python?"]
    ours = embeddings.LocalEmbedder(MODELS_DIR, threads=1).embed_sync(texts)
    theirs = _shipped_vectors(texts)
    assert np.min(np.sum(ours * theirs, axis=1)) > 0.9, np.sum(ours * theirs, axis=1)
    # The paraphrase (last) is nearest the question it paraphrases (first), under both.
    for vectors in (ours, theirs):
        similarities = vectors[:-1] @ vectors[-1]
        assert int(np.argmax(similarities)) == 0, similarities


def test_a_texts_vector_does_not_depend_on_the_texts_beside_it(derived):
    embedder = embeddings.LocalEmbedder(MODELS_DIR, threads=1)
    texts = ["short", "a much longer text about the harbour's lighthouse, painted red and white in 1921"]
    together = embedder.embed_sync(texts)
    for text, vector in zip(texts, together):
        np.testing.assert_allclose(embedder.embed_sync([text])[0], vector, atol=1e-6)


def test_the_model_id_is_not_an_earlier_ones():
    assert embeddings.LocalEmbedder.model_id == embeddings.LOCAL_MODEL_ID
    assert embeddings.LOCAL_MODEL_ID not in embeddings.LEGACY_LOCAL_MODEL_IDS
