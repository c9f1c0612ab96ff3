"""Benchmark: how often file search finds the answer (issue 15) — not a test, not in CI.

Data (bench/data/, see its NOTICE):

- ``python_reference.json``: the 79 topics of the Python Language Reference that CPython ships
  as ``pydoc_data.topics`` (what ``help("assert")`` shows), one document each (465 kB in all;
  several topics contain others: ``compound`` holds ``if``, ``while``, ``for``...);
- ``python_reference_questions.json``: 165 questions written for those documents by someone who
  did not see the search code, paraphrased as a programmer who has not read the text would ask,
  each with its evidence: a verbatim passage of its topic holding the answer. The search's
  settings (how lexical and vector scores are blended) were chosen on this set ("tuning");
- ``python_reference_questions_heldout.json``: 158 more, by another writer who saw neither the
  code nor the first set, written after those settings were chosen ("held-out": the figure that
  counts).

A result is right when its file is a topic whose text holds the question's evidence (whitespace
aside), so a question about ``for`` loops is answered by ``for`` and by ``compound`` alike.

Everything goes through the API of a real server: the corpus is uploaded (``files.create``) and
added to a vector store with the default chunking (800/400), then every question is asked with
``POST /v1/vector_stores/{id}/search`` (20 results). The server is restarted on the same database
once per ranking (``ASSISTANTD_SEARCH_RANKINGS``): ``lexical`` only, ``vector`` only, and the
shipped ``hybrid``; a fourth line fuses the lexical and vector result lists here with plain
reciprocal rank fusion (k = 60), the simple baseline the shipped hybrid must beat. Printed for
each: recall@5 and recall@20 (a right result among the first 5 / 20), MRR@10, and the search's
latency through the API (p50, p95), ingestion's MB/min, for SQLite and, with ``--database-url``,
PostgreSQL (with pgvector when the server has it).

    python bench/retrieval.py [--database-url postgresql://…] [--embeddings local] [--show-misses]
                              [--server-src OTHER_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.openloop import pct  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

DATA = ROOT / "bench" / "data"
RESULTS = 20
RRF_K = 60
TARGET = {"recall@5": 0.95, "MRR@10": 0.85}


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class Question:
    id: str
    topic: str
    text: str
    right: frozenset[str]  # the topics whose text holds the evidence


SETS = {"tuning": "python_reference_questions.json", "held-out": "python_reference_questions_heldout.json"}


def load(which: str = "tuning") -> tuple[dict[str, str], list[Question]]:
    topics = json.loads((DATA / "python_reference.json").read_text())["topics"]
    flat = {name: _flat(text) for name, text in topics.items()}
    questions = []
    for q in json.loads((DATA / SETS[which]).read_text()):
        evidence = _flat(q["evidence"])
        right = frozenset(name for name, text in flat.items() if evidence in text)
        assert q["topic"] in right, q
        questions.append(Question(q["id"], q["topic"], q["question"], right))
    return topics, questions


def scores(ranked: dict[str, list[str]], questions: list[Question]) -> dict[str, float]:
    """recall@5, recall@20 and MRR@10 of ranked topic lists (one per question id)."""
    first = []
    for q in questions:
        rank = next((i for i, topic in enumerate(ranked[q.id], start=1) if topic in q.right), None)
        first.append(rank)
    n = len(questions)
    return {"recall@5": sum(1 for r in first if r and r <= 5) / n,
            "recall@20": sum(1 for r in first if r and r <= 20) / n,
            "MRR@10": sum(1 / r for r in first if r and r <= 10) / n}


def rrf(*rankings: list[str], k: int = RRF_K) -> list[str]:
    """Plain reciprocal rank fusion of result lists (results as ``file:position`` keys)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1 / (k + rank)
    return sorted(fused, key=lambda key: -fused[key])


class Bench:
    def __init__(self, database_url: str | None, embeddings: str, server_src: str | None = None) -> None:
        self.database_url, self.embeddings = database_url, embeddings
        self.env = {"PYTHONPATH": server_src} if server_src else {}  # another checkout's server
        self.data_dir = Path(tempfile.mkdtemp(prefix="assistantd-bench-retrieval-"))

    def server(self, rankings: str) -> ServerProcess:
        return ServerProcess(self.data_dir, self.database_url, ASSISTANTD_LOG_LEVEL="warning",
                             ASSISTANTD_EMBEDDINGS=self.embeddings, ASSISTANTD_SANDBOX_WARM_POOL="0",
                             ASSISTANTD_SEARCH_RANKINGS=rankings, **self.env).start(timeout=600)

    def ingest(self, server: ServerProcess, topics: dict[str, str]) -> tuple[str, dict[str, str], float]:
        """The corpus in a new vector store: its id, file id → topic, MB/min."""
        with httpx.Client(base_url=server.base_url, timeout=600) as http:
            began = time.perf_counter()
            names = {}
            for name, text in topics.items():
                r = http.post("/files", files={"file": (f"{name}.txt", text.encode())}, data={"purpose": "assistants"})
                r.raise_for_status()
                names[r.json()["id"]] = name
            store = http.post("/vector_stores", json={"name": "python-reference"}).json()["id"]
            batch = http.post(f"/vector_stores/{store}/file_batches", json={"file_ids": list(names)}).json()
            while batch["status"] == "in_progress":
                time.sleep(0.2)
                batch = http.get(f"/vector_stores/{store}/file_batches/{batch['id']}").json()
            seconds = time.perf_counter() - began
            assert batch["status"] == "completed" and batch["file_counts"]["completed"] == len(topics), batch
        mb = sum(len(t.encode()) for t in topics.values()) / 1e6
        return store, names, mb / (seconds / 60)

    def ask(self, server: ServerProcess, store: str, names: dict[str, str],
            questions: list[Question]) -> tuple[dict[str, list[str]], dict[str, list[str]], list[float]]:
        """Each question's results: as topics, and as ``file:chunk`` keys (for fusion here); latencies."""
        topics, keys, took = {}, {}, []
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            for q in questions[:5]:  # warm up
                http.post(f"/vector_stores/{store}/search", json={"query": q.text, "max_num_results": RESULTS})
            for q in questions:
                began = time.perf_counter()
                r = http.post(f"/vector_stores/{store}/search", json={"query": q.text, "max_num_results": RESULTS})
                took.append(time.perf_counter() - began)
                r.raise_for_status()
                data = r.json()["data"]
                topics[q.id] = [names[d["file_id"]] for d in data]
                keys[q.id] = [f"{d['file_id']}:{_flat(d['content'][0]['text'])[:80]}" for d in data]
        return topics, keys, took


def line(label: str, s: dict[str, float], extra: str = "") -> str:
    return (f"  {label:<22} recall@5 {s['recall@5']:.3f}  recall@20 {s['recall@20']:.3f}  "
            f"MRR@10 {s['MRR@10']:.3f}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (else SQLite in a temp folder)")
    parser.add_argument("--embeddings", default="local", help="ASSISTANTD_EMBEDDINGS")
    parser.add_argument("--rankings", default="lexical,vector,hybrid")
    parser.add_argument("--server-src", default=None,
                        help="run the server from another checkout's src/ (e.g. a git worktree of an earlier commit)")
    parser.add_argument("--show-misses", action="store_true", help="print the questions hybrid misses in its top 5")
    args = parser.parse_args()

    sets = {which: load(which)[1] for which in SETS}
    topics, _ = load()
    questions = [q for qs in sets.values() for q in qs]
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"corpus: {len(topics)} documents, {sum(map(len, topics.values())) / 1000:.0f} k characters; "
          + ", ".join(f"{len(qs)} {which} questions" for which, qs in sets.items())
          + f"; {backend}, embeddings {args.embeddings}", flush=True)
    bench = Bench(args.database_url, args.embeddings, args.server_src)
    ranked: dict[str, dict[str, list[str]]] = {}
    keyed: dict[str, dict[str, list[str]]] = {}
    took: dict[str, list[float]] = {}
    store = names = None
    for rankings in args.rankings.split(","):
        server = bench.server(rankings)
        try:
            if store is None:
                store, names, rate = bench.ingest(server, topics)
                print(f"ingested through the API: {rate:.2f} MB/min", flush=True)
            ranked[rankings], keyed[rankings], took[rankings] = bench.ask(server, store, names, questions)
        finally:
            server.stop()
    if "lexical" in keyed and "vector" in keyed:
        ranked["plain RRF (lex+vec)"] = {
            q.id: [names[key.split(":", 1)[0]] for key in rrf(keyed["lexical"][q.id], keyed["vector"][q.id])]
            for q in questions}
    for which, qs in sets.items():
        print(f"{which} questions ({len(qs)}):")
        for label, by_question in ranked.items():
            latency = (f"   search p50 {pct(took[label], 0.50) * 1000:5.1f} ms  p95 {pct(took[label], 0.95) * 1000:5.1f} ms"
                       if label in took else "   (fused here from the two lists above)")
            print(line(label, scores(by_question, qs), latency))
    print(f"target on the embedded default (hybrid, held-out): recall@5 >= {TARGET['recall@5']}, "
          f"MRR@10 >= {TARGET['MRR@10']}")
    if args.show_misses and "hybrid" in ranked:
        for q in questions:
            if not any(t in q.right for t in ranked["hybrid"][q.id][:5]):
                print(f"  miss {q.id} [{q.topic}] {q.text!r} → {ranked['hybrid'][q.id][:5]}")


if __name__ == "__main__":
    main()
