"""Benchmark: the hand-written IVF index against maintained ANN libraries (not a test, not in CI).

The question: for the in-process vector search of a large store (``search._vector`` over the
store's float32, L2-normalised, 384-dimensional matrix), is ``vector_stores/ivf.py`` worth keeping,
or does a maintained approximate-nearest-neighbour library do better? Each index is built over
the same base vectors and asked the same held-out queries, one query at a time (as the server
searches), for the top :data:`search.CANDIDATES` (100) rows. Measured per index:

- build: wall time to build it from the matrix (for ``ivf.py``: ``StoreVectors.indexed()``, i.e.
  ``ivf.build`` and the reordering of the rows, which is what the server does);
- index MB: the bytes the index holds *besides* the float32 matrix that the server keeps anyway
  (for filtered searches and rows appended since the build): ``ivf.py``'s centroids and group
  offsets; a library's serialised index (which holds its own copy of the vectors plus its graph
  or lists);
- recall@10 and recall@100: the share of the exact top 10 / top 100 (brute force with numpy over
  the whole matrix) among the index's first 10 / 100 results, averaged over the queries;
- latency p50 / p95 of one query: ``ivf.py`` goes through the server's own ``search._vector``
  (``ivf.candidates`` and exact scoring of the candidate rows, building the same
  ``{seq: similarity}`` result, which alone costs about 40 µs; a library's time stops at its
  array of ids); "numpy, exact scan" is the same ``_vector`` over an unindexed store: the
  server's exact scan, the floor an index has to beat.

Indexes: ``ivf.py`` as shipped (``PROBE_FRACTION`` 0.1 of ``√n`` groups) and, for the curve, at
twice that fraction; usearch, hnswlib and faiss ``IndexHNSWFlat`` (HNSW: M / connectivity 16,
ef_construction 128, searched at ef 128 and 256 — an ef under k = 100 is raised to k by all
three); faiss ``IndexIVFFlat`` with the same number of lists and probes as ``ivf.py`` and twice
the probes. A library that is not installed is reported as such; install them with
``.venv/bin/pip install usearch faiss-cpu hnswlib``.

Threads (the machine has 2 cores): builds use 2 threads (usearch ``threads=2``, hnswlib
``num_threads=2``, faiss ``omp_set_num_threads(2)``; ``ivf.py`` and numpy through OpenBLAS, held to
2 by ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` set here before numpy loads). Searches are one
query at a time on the calling thread (usearch ``threads=1``, hnswlib ``num_threads=1``, faiss
``omp_set_num_threads(1)``); numpy's matrix-vector product may use OpenBLAS's 2 threads, as it does
in the server.

Data, each with 500 held-out queries:

- ``clustered`` (always): ``--rows`` (100,000) synthetic unit vectors shaped like the local
  model's embeddings rather than random directions: 300 topics under 20 broader subjects, topic
  sizes log-normal, each topic's spread log-normal around ``--spreads``, drawn through an
  anisotropic (power-law) covariance and pulled toward one common direction. Queries are drawn
  from the same mixture. Two spreads by default, because no single one is like the real vectors
  in every respect that matters here (figures at 3,236 rows, against all-MiniLM-L6-v2 windows of
  ``bench/data/python_reference.json`` in brackets; the "shape" line printed for each set gives
  them over the whole set, where neighbours are closer at 100k, and the last two at 3,236 rows):

  - 1.2, "tight": fitted to the similarity statistics. Random-pair cosine 0.21 ± 0.11 (real
    0.21 ± 0.13), length of the mean vector 0.46 (0.46), a held-out window's 10th / 100th
    neighbour cosine 0.62 / 0.45 (0.61 / 0.44), variance in the top 10 / 50 principal components
    35 % / 68 % (35 % / 69 %). But its topics are easier to separate than real text: the share of
    the exact top 100 inside ``ivf.py``'s probed groups is 0.55 / 0.79 / 0.94 at 800 / 1,600 /
    3,200 rows, where the real vectors (asked the questions) give 0.49 / 0.64 / 0.77;
  - 2.0, "loose": fitted to that curve (0.47 / 0.59 / 0.74), the property that decides an IVF
    index's recall; a question's 10th / 100th neighbour cosine 0.50 / 0.39 (real questions:
    0.53 / 0.38). Its local intrinsic dimensionality (MLE, 20 neighbours) is higher than the
    real vectors' (34 against 14-20), so it is harder than real data for graph indexes (HNSW
    recall@100 at 3.2k rows 0.992 against 0.994 for real): the libraries are not favoured.

- ``real`` (with ``--real``): the local model (``LocalEmbedder``, the server's default) embeds
  windows of 40 words, every 20 words (the server's chunks overlap by half too), of the 79
  topics of ``bench/data/python_reference.json``: 3,236 windows, about 1-2 minutes on 2 cores
  (100k would take hours; ``--real-rows`` caps the count). Queries: the 165 questions of
  ``python_reference_questions.json`` and first lines of the running Python's standard-library
  docstrings (text that is not in the base set), 500 in all. At this size the server would not
  index the store (``ivf.MIN_ROWS`` is 20,000); the point is the recall on real cluster structure.

Latencies are wall time on a shared machine: the load average is printed before and after.

    .venv/bin/python bench/ann.py [--rows 100000] [--queries 500] [--spreads 1.2,2.0] [--real] [--real-rows 3300]
"""

from __future__ import annotations

import os

THREADS = 2  # the machine's cores; set before numpy (and its OpenBLAS) is loaded
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from bench.openloop import pct  # noqa: E402
from tests.support.server import MODELS_DIR  # noqa: E402
from assistantd.vector_stores import ivf  # noqa: E402
from assistantd.vector_stores import search  # noqa: E402
from assistantd.vector_stores.search import StoreVectors, _vector  # noqa: E402

DATA = ROOT / "bench" / "data"
DIMS = 384
K = search.CANDIDATES  # 100: what _vector is asked for
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = (128, 256)
WARM_UP = 50  # untimed queries before the timed ones, per index


# --- data --------------------------------------------------------------------------------------

def _unit(m: np.ndarray) -> np.ndarray:
    return (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def clustered(rows: int, queries: int, seed: int = 0, topics: int = 300, subjects: int = 20,
              alpha: float = 0.4, spread: float = 1.2, spread_sigma: float = 0.35, topic_offset: float = 0.8,
              common: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Base and query unit vectors from one mixture shaped like text embeddings (see the module
    docstring for the fitted statistics)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((DIMS, DIMS)))
    scale = np.arange(1, DIMS + 1, dtype=np.float64) ** -alpha  # power-law spectrum
    mix = (basis * (scale / np.sqrt((scale ** 2).sum()))).astype(np.float32)
    direction = rng.standard_normal(DIMS)
    direction /= np.linalg.norm(direction)  # the direction all embeddings share a little
    subject_centres = rng.standard_normal((subjects, DIMS)).astype(np.float32)
    centres = (subject_centres[rng.integers(0, subjects, topics)]
               + topic_offset * rng.standard_normal((topics, DIMS)).astype(np.float32))
    weight = rng.lognormal(0.0, 1.0, topics)
    weight /= weight.sum()
    sigma = rng.lognormal(math.log(spread), spread_sigma, topics).astype(np.float32)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, DIMS), dtype=np.float32)
        for start in range(0, n, 20_000):
            m = min(20_000, n - start)
            topic = rng.choice(topics, m, p=weight)
            latent = centres[topic] + sigma[topic, None] * rng.standard_normal((m, DIMS)).astype(np.float32)
            out[start:start + m] = _unit(_unit(latent @ mix.T) + common * direction)
        return out

    return draw(rows), draw(queries)


def _windows(words_per: int = 40, stride: int = 20) -> list[str]:
    topics = json.loads((DATA / "python_reference.json").read_text())["topics"]
    out = []
    for text in topics.values():
        words = text.split()
        for start in range(0, max(1, len(words) - (words_per - stride)), stride):
            out.append(" ".join(words[start:start + words_per]))
    return out


def _docstring_lines(exclude: str) -> list[str]:
    """First lines of standard-library docstrings (6 words or more) not found in ``exclude``."""
    names = ("builtins", "os", "os.path", "re", "json", "collections", "itertools", "functools", "pathlib",
             "asyncio", "typing", "dataclasses", "string", "math", "random", "statistics", "datetime",
             "subprocess", "threading", "logging", "argparse", "shutil", "tempfile", "io", "csv",
             "sqlite3", "socket", "urllib.parse", "http.client", "email.message", "decimal", "fractions",
             "heapq", "bisect", "contextlib", "inspect", "textwrap", "enum", "abc", "operator", "copy",
             "pickle", "struct", "zipfile", "tarfile", "hashlib", "base64", "unittest", "difflib", "queue")
    seen, out = set(), []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(module, attr, None)) or ""
            line = " ".join(doc.strip().split("\n\n")[0].split())
            if len(line.split()) < 6 or line in seen or line in exclude:
                continue
            seen.add(line)
            out.append(line)
    return out


def real(max_rows: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    from assistantd.vector_stores.embeddings import LocalEmbedder

    texts = _windows()
    if len(texts) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), max_rows, replace=False))
        texts = [texts[i] for i in keep]
    corpus = " ".join(" ".join(t.split()) for t in json.loads((DATA / "python_reference.json").read_text())["topics"].values())
    asked = [q["question"] for q in json.loads((DATA / "python_reference_questions.json").read_text())]
    extra = _docstring_lines(corpus)
    rng = np.random.default_rng(seed)
    picked = [extra[i] for i in np.sort(rng.choice(len(extra), max(0, queries - len(asked)), replace=False))]
    embedder = LocalEmbedder(MODELS_DIR, threads=THREADS)
    embedder.warm_up()
    started = time.perf_counter()
    base = embedder.embed_sync(texts)
    seconds = time.perf_counter() - started
    return base, embedder.embed_sync((asked + picked)[:queries]), seconds


CALIBRATION_ROWS = 3236  # the real windows: the synthetic sets are compared with them at this size


def shape(base: np.ndarray, queries: np.ndarray) -> str:
    """The statistics the synthetic data were fitted on, the last two over the first
    :data:`CALIBRATION_ROWS` rows (the size of the real set): the local intrinsic dimensionality
    (maximum-likelihood estimate over 20 neighbours) and the share of the exact top 100 inside the
    groups ``ivf.py`` probes."""
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(base), 20_000), rng.integers(0, len(base), 20_000)
    pair = (base[i] * base[j]).sum(axis=1)
    q = queries[:200]
    top = -np.sort(-(q @ base.T), axis=1)
    sample = base[rng.choice(len(base), min(len(base), 5000), replace=False)]
    variance = np.linalg.svd(sample - sample.mean(axis=0), compute_uv=False) ** 2
    variance /= variance.sum()
    small = base[:CALIBRATION_ROWS]
    near = -np.sort(-(q @ small.T), axis=1)[:, :20]
    distance = np.sqrt(np.maximum(2 - 2 * near, 1e-12))
    lid = np.mean(-1 / np.mean(np.log(distance[:, :-1] / distance[:, -1:]), axis=1))
    order, index = ivf.build(small)
    group = np.searchsorted(index.offsets, np.argsort(order), side="right") - 1  # row of small → its group
    centre = q @ index.centroids.T
    probed = np.argpartition(-centre, index.nprobe - 1, axis=1)[:, :index.nprobe]
    truth = exact_top(small, q, K)
    share = np.mean([np.isin(group[truth[n]], probed[n]).mean() for n in range(len(q))])
    return (f"random-pair cosine {pair.mean():.2f} ± {pair.std():.2f}, |mean vector| {np.linalg.norm(base.mean(axis=0)):.2f}, "
            f"query's 1st/10th/100th neighbour cosine {top[:, 0].mean():.2f}/{top[:, 9].mean():.2f}/{top[:, 99].mean():.2f}, "
            f"variance in top 10/50 PCs {variance[:10].sum():.0%}/{variance[:50].sum():.0%}; at {len(small):,} rows: "
            f"LID {lid:.0f}, top 100 in ivf.py's probed groups {share:.2f}")


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start:start + 100] @ base.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:start + 100] = np.take_along_axis(part, order, axis=1)
    return out


# --- indexes ------------------------------------------------------------------------------------

@dataclass
class Built:
    build_s: float
    index_bytes: int
    searches: list[tuple[str, Callable[[np.ndarray], np.ndarray]]]  # (setting, query (1, d) → ids best first)
    note: str = ""


def _store(base: np.ndarray) -> StoreVectors:
    n = len(base)
    return StoreVectors(files_seen={"f": 1}, seqs=np.arange(n, dtype=np.int64), files=np.zeros(n, np.int32),
                        file_ids=["f"], vectors=base)


def _server_search(stored: StoreVectors, fraction: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    def run(q: np.ndarray) -> np.ndarray:
        if fraction is None:
            found = _vector(stored, q, None, K, -1.0)
        else:  # ivf.IVFIndex.nprobe reads the module constant at each search
            shipped, ivf.PROBE_FRACTION = ivf.PROBE_FRACTION, fraction
            try:
                found = _vector(stored, q, None, K, -1.0)
            finally:
                ivf.PROBE_FRACTION = shipped
        return np.fromiter(found.keys(), dtype=np.int64, count=len(found))
    return run


def build_numpy(base: np.ndarray) -> Built:
    return Built(0.0, 0, [("exact scan (server's _vector, no index)", _server_search(_store(base)))])


def build_ivf(base: np.ndarray) -> Built:
    started = time.perf_counter()
    indexed = _store(base).indexed()  # ivf.build + the rows reordered, as VectorCache does
    seconds = time.perf_counter() - started
    index = indexed.index
    lists = len(index.centroids)
    shipped = ivf.PROBE_FRACTION
    doubled = max(1, math.ceil(lists * shipped * 2))
    return Built(seconds, index.centroids.nbytes + index.offsets.nbytes,
                 [(f"{lists} lists, nprobe {index.nprobe} (shipped)", _server_search(indexed)),
                  (f"{lists} lists, nprobe {doubled}", _server_search(indexed, shipped * 2))],
                 note=f"{ivf.ITERATIONS} k-means iterations on {ivf.TRAINING_PER_LIST}/list")


def build_usearch(base: np.ndarray) -> Built:
    from usearch.index import Index

    index = Index(ndim=base.shape[1], metric="ip", dtype="f32", connectivity=HNSW_M,
                  expansion_add=HNSW_EF_CONSTRUCTION, expansion_search=HNSW_EF_SEARCH[0])
    started = time.perf_counter()
    index.add(np.arange(len(base), dtype=np.uint64), base, threads=THREADS, log=False)
    seconds = time.perf_counter() - started

    def at(ef: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            index.expansion_search = ef
            return np.asarray(index.search(q[0], K, threads=1).keys, dtype=np.int64)
        return run
    return Built(seconds, index.serialized_length,
                 [(f"HNSW f32, connectivity {HNSW_M}, ef {ef}", at(ef)) for ef in HNSW_EF_SEARCH],
                 note=f"resident {index.memory_usage / 1e6:.0f} MB")


def build_hnswlib(base: np.ndarray) -> Built:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=base.shape[1])
    index.init_index(max_elements=len(base), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M, random_seed=0)
    started = time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=THREADS)
    seconds = time.perf_counter() - started

    def at(ef: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            index.set_ef(ef)
            return index.knn_query(q, k=K, num_threads=1)[0][0].astype(np.int64)
        return run
    return Built(seconds, index.index_file_size(),
                 [(f"HNSW, M {HNSW_M}, ef {ef}", at(ef)) for ef in HNSW_EF_SEARCH])


def build_faiss_hnsw(base: np.ndarray) -> Built:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexHNSWFlat(base.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    started = time.perf_counter()
    index.add(base)
    seconds = time.perf_counter() - started
    faiss.omp_set_num_threads(1)

    def at(ef: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            index.hnsw.efSearch = ef
            return index.search(q, K)[1][0].astype(np.int64)
        return run
    return Built(seconds, faiss.serialize_index(index).nbytes,
                 [(f"IndexHNSWFlat, M {HNSW_M}, ef {ef}", at(ef)) for ef in HNSW_EF_SEARCH])


def build_faiss_ivf(base: np.ndarray) -> Built:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    lists = max(1, round(math.sqrt(len(base))))  # as ivf.build
    probes = max(1, math.ceil(lists * ivf.PROBE_FRACTION))  # as ivf.IVFIndex.nprobe
    quantizer = faiss.IndexFlatIP(base.shape[1])
    index = faiss.IndexIVFFlat(quantizer, base.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    index.train(base)
    index.add(base)
    seconds = time.perf_counter() - started
    faiss.omp_set_num_threads(1)

    def at(nprobe: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(q: np.ndarray) -> np.ndarray:
            index.nprobe = nprobe
            found = index.search(q, K)[1][0]
            return found[found >= 0].astype(np.int64)
        return run
    return Built(seconds, faiss.serialize_index(index).nbytes,
                 [(f"IndexIVFFlat, {lists} lists, nprobe {p}", at(p)) for p in (probes, 2 * probes)])


INDEXES: list[tuple[str, str | None, Callable[[np.ndarray], Built]]] = [
    # (name in the table, the distribution it needs, build)
    ("numpy", None, build_numpy),
    ("ivf.py", None, build_ivf),
    ("usearch", "usearch", build_usearch),
    ("hnswlib", "hnswlib", build_hnswlib),
    ("faiss", "faiss-cpu", build_faiss_hnsw),
    ("faiss", "faiss-cpu", build_faiss_ivf),
]


# --- measuring ----------------------------------------------------------------------------------

@dataclass
class Row:
    data: str
    index: str
    setting: str
    build_s: float | None = None
    index_mb: float | None = None
    recall10: float = math.nan
    recall100: float = math.nan
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    note: str = ""
    first: bool = True  # the first setting of its index: build and size are shown on its line


def measure(run: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    for q in queries[:WARM_UP]:
        run(q[None])
    times, hit10, hit100 = [], 0, 0
    for i, q in enumerate(queries):
        one = np.ascontiguousarray(q[None])
        started = time.perf_counter()
        found = run(one)
        times.append(time.perf_counter() - started)
        hit10 += len(np.intersect1d(found[:10], truth[i, :10]))
        hit100 += len(np.intersect1d(found[:K], truth[i, :K]))
    n = len(queries)
    return hit10 / (10 * n), hit100 / (K * n), pct(times, 0.50) * 1e3, pct(times, 0.95) * 1e3


def run_data(name: str, base: np.ndarray, queries: np.ndarray) -> list[Row]:
    print(f"\n[{name}] {len(base):,} × {base.shape[1]} base vectors ({base.nbytes / 1e6:.1f} MB float32), "
          f"{len(queries)} queries; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"  shape: {shape(base, queries)}", flush=True)
    truth = exact_top(base, queries, K)
    rows = []
    for label, dist, build in INDEXES:
        if dist is not None:
            try:
                importlib.import_module({"faiss-cpu": "faiss"}.get(dist, dist))
            except ImportError:
                rows.append(Row(name, label, "not installed"))
                print(f"  {label}: not installed", flush=True)
                continue
        gc.collect()
        built = build(base)
        for i, (setting, run) in enumerate(built.searches):
            r10, r100, p50, p95 = measure(run, queries, truth)
            row = Row(name, label, setting, built.build_s, built.index_bytes / 1e6, r10, r100, p50, p95,
                      built.note if i == 0 else "", first=i == 0)
            rows.append(row)
            print(f"  {label} {setting}: build {built.build_s:.1f} s, recall@10 {r10:.3f}, recall@100 {r100:.3f}, "
                  f"p50 {p50:.3f} ms, p95 {p95:.3f} ms", flush=True)
        del built
    return rows


def table(rows: list[Row]) -> str:
    head = ("data", "index", "setting", "build s", "index MB", "R@10", "R@100", "p50 ms", "p95 ms", "note")
    body = []
    for r in rows:
        body.append((r.data, r.index, r.setting,
                     "" if r.build_s is None or not r.first else f"{r.build_s:.1f}",
                     "" if r.index_mb is None or not r.first else f"{r.index_mb:.1f}",
                     "" if math.isnan(r.recall10) else f"{r.recall10:.3f}",
                     "" if math.isnan(r.recall100) else f"{r.recall100:.3f}",
                     "" if math.isnan(r.p50_ms) else f"{r.p50_ms:.2f}",
                     "" if math.isnan(r.p95_ms) else f"{r.p95_ms:.2f}", r.note))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def versions() -> str:
    out = []
    for dist in ("numpy", "usearch", "hnswlib", "faiss-cpu"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


SEARCH_TARGET_MS = 50  # bench/file_search.py's target: search p95 at 100k chunks, through the API
WORTH_MS = SEARCH_TARGET_MS / 10  # a library must save this much per query (at ivf.py's recall or better) ...
WORTH_RECALL = 0.02  # ... or find this much more of the top 100 at no more latency


def _span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def conclusion(rows: list[Row]) -> str:
    """One paragraph: the figures of the data sets the server would index (at least
    ``ivf.MIN_ROWS`` rows), a verdict by the rule stated in it, and what the real vectors add."""
    def of(data: str) -> list[Row]:
        return [r for r in rows if r.data == data and not math.isnan(r.recall100)]

    names = list(dict.fromkeys(r.data for r in rows))
    indexed = [d for d in names if int(re.search(r"(\d+)k", d).group(1)) * 1000 >= ivf.MIN_ROWS]
    if not indexed:
        return f"No data set reaches ivf.MIN_ROWS ({ivf.MIN_ROWS:,} rows), where the server starts to index."
    exact, shipped, libs, best = [], [], [], []
    for d in indexed:
        mine = of(d)
        exact.append(next(r for r in mine if r.index == "numpy"))
        shipped.append(next(r for r in mine if r.index == "ivf.py" and "shipped" in r.setting))
        libs.append([r for r in mine if r.index not in ("numpy", "ivf.py")])
        enough = [r for r in libs[-1] if r.recall100 >= shipped[-1].recall100]
        best.append(min(enough, key=lambda r: r.p50_ms) if enough else None)
    text = (f"On {' and '.join(indexed)} (sizes the server indexes), ivf.py as shipped finds recall@10 "
            f"{_span([r.recall10 for r in shipped], '.3f')} and recall@100 {_span([r.recall100 for r in shipped], '.3f')} "
            f"in {_span([r.p50_ms for r in shipped], '.1f')} ms a query (p50; the exact scan it replaces: "
            f"{_span([r.p50_ms for r in exact], '.1f')} ms), built in {_span([r.build_s for r in shipped], '.1f')} s, "
            f"holding {_span([r.index_mb for r in shipped], '.1f')} MB besides the matrix. ")
    if not any(libs):
        return text + "No ANN library is installed, so there is nothing to compare it with."
    hnsw = [r for group in libs for r in group if "HNSW" in r.setting]
    if hnsw:
        text += (f"The HNSW libraries answer in {_span([r.p50_ms for r in hnsw], '.2f')} ms with recall@100 "
                 f"{_span([r.recall100 for r in hnsw], '.3f')} (ef 128-256) but take "
                 f"{_span([r.build_s for r in hnsw], '.0f')} s to build on {THREADS} threads and hold "
                 f"{_span([r.index_mb for r in hnsw], '.0f')} MB each besides the matrix (their own copy of the "
                 f"vectors and the graph). ")
    def nprobe(r: Row) -> str | None:
        found = re.search(r"nprobe (\d+)", r.setting)
        return found and found.group(1)

    same = [f for ship, group in zip(shipped, libs) for f in group
            if "IVFFlat" in f.setting and nprobe(f) == nprobe(ship)]
    if same:
        text += (f"faiss's IndexIVFFlat with the same lists and probes finds about as much "
                 f"({_span([r.recall100 for r in same], '.3f')}) in {_span([r.p50_ms for r in same], '.2f')} ms: "
                 f"the gap is implementation (C++ over the lists against a numpy call per group), not algorithm. ")
    verdicts = []
    for d, ship, lib_best, group in zip(indexed, shipped, best, libs):
        gain = max((r for r in group if r.p50_ms <= ship.p50_ms), key=lambda r: r.recall100, default=None)
        saved = ship.p50_ms - lib_best.p50_ms if lib_best else 0.0
        more = gain.recall100 - ship.recall100 if gain else 0.0
        verdicts.append(saved >= WORTH_MS or more >= WORTH_RECALL)
        if lib_best:
            text += (f"{d}: at least ivf.py's recall@100 soonest with {lib_best.index} {lib_best.setting} "
                     f"({lib_best.p50_ms:.2f} ms, {lib_best.recall100:.3f}), {saved:.1f} ms saved a query. ")
        else:
            text += f"{d}: no library configuration reaches ivf.py's recall@100 ({ship.recall100:.3f}). "
    rule = (f"(the rule here: switch when a library saves at least {WORTH_MS:.0f} ms a query, a tenth of the "
            f"{SEARCH_TARGET_MS} ms search target, at ivf.py's recall@100 or better, or finds {WORTH_RECALL} more of "
            f"the top 100 at no more latency)")
    if all(verdicts):
        text += f"Verdict: switch {rule}; mind the build time and the second copy of the vectors."
    else:
        text += (f"Verdict: keep ivf.py {rule}: the milliseconds a library saves are small beside a search's "
                 f"other costs, and it would cost a longer background build, a second copy of each store's vectors "
                 f"and a binary dependency.")
    small = [d for d in names if d not in indexed and d.startswith("real")]
    for d in small:
        mine = of(d)
        ship = next(r for r in mine if r.index == "ivf.py" and "shipped" in r.setting)
        graph = [r for r in mine if "HNSW" in r.setting]
        text += (f" On the real vectors ({d}, below ivf.MIN_ROWS: the server scans them exactly) ivf.py would find only "
                 f"{ship.recall100:.3f} of the top 100 (HNSW: {_span([r.recall100 for r in graph], '.3f')}): probing a "
                 f"fixed share of its groups, an IVF index scans fewer rows in a smaller store, so its recall is "
                 f"lowest just over ivf.MIN_ROWS (see --rows {ivf.MIN_ROWS}).")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="clustered base vectors (default 100,000)")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries per data set (default 500)")
    parser.add_argument("--real", action="store_true", help="also real all-MiniLM-L6-v2 embeddings of "
                        "bench/data/python_reference.json (about 1-2 minutes to embed)")
    parser.add_argument("--real-rows", type=int, default=3300, help="at most this many real windows (default 3300)")
    parser.add_argument("--spreads", type=lambda v: [float(x) for x in v.split(",")], default=[1.2, 2.0],
                        help="clustered data sets: each topic's median spread (default 1.2,2.0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.monotonic()
    print(f"{versions()}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs, {THREADS} threads to build, "
          f"1 query at a time to search; load average {os.getloadavg()[0]:.2f} (1 min)", flush=True)
    rows: list[Row] = []
    if args.real:
        base, queries, seconds = real(args.real_rows, args.queries, args.seed)
        print(f"embedded {len(base):,} windows in {seconds:.0f} s ({len(base) / seconds:.0f}/s)", flush=True)
        rows += run_data(f"real {len(base) // 1000}k" if len(base) >= 1000 else f"real {len(base)}", base, queries)
        del base, queries
    for spread in args.spreads:
        base, queries = clustered(args.rows, args.queries, seed=args.seed, spread=spread)
        rows += run_data(f"clustered {args.rows // 1000}k σ{spread:g}", base, queries)
        del queries

    print(f"\nTop {K} per query, one query at a time; recall against numpy's exact top 10 / top 100. "
          f"index MB: held besides the float32 matrix the server keeps ({base.nbytes / 1e6:.1f} MB at "
          f"{args.rows:,} rows).\n")
    print(table(rows))
    print(f"\n{conclusion(rows)}")
    print(f"\n{time.monotonic() - started:.0f} s in all; load average {os.getloadavg()[0]:.2f} (1 min), "
          f"{os.getloadavg()[2]:.2f} (15 min) on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
