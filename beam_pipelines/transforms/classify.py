"""Math scoring: the recall round's fastText model applied to every document of the pool.

Pure core: `score_document(model, normalization, document)` fills `Document.math_score` with
P(math) of the normalised text. Beam wrapper: `MathScoreDoFn` loads the model once per worker
process in `setup()` (a process-wide cache keyed by path, so the threads of one SDK worker share
one copy of a model that can be hundreds of MB) and counts scored documents and score bands.
The cache entry also records the file's size and modification time: workers that outlive a
pipeline (a Dask cluster, Flink task managers) reload a model that a rerun wrote anew.

A document the model cannot score (fastText raising on broken Unicode, say) gets score 0.0 and
bumps `score_errors`: it stays in the pool, unselected, and is counted, never lost.
Cost: linear in pool text; memory is one model per worker process.
"""

from __future__ import annotations

import threading

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines.document import Document
from beam_pipelines.recall.fasttext_model import TextNormalization, load_model, math_probability

SCORE_STEP = "recall_score"

_MODELS: dict[str, tuple] = {}
_MODELS_LOCK = threading.Lock()


def score_document(model, normalization: TextNormalization, document: Document) -> Document:
    document.math_score = math_probability(model, normalization(document.text))
    return document


def shared_model(model_path: str):
    """(model, normalization) for `model_path`, loaded at most once per process and version of
    the file (one version kept per path)."""
    metadata = FileSystems.match([model_path])[0].metadata_list[0]
    version = (metadata.size_in_bytes, metadata.last_updated_in_seconds)
    with _MODELS_LOCK:
        cached = _MODELS.get(model_path)
        if cached is None or cached[0] != version:
            cached = _MODELS[model_path] = (version, load_model(model_path))
        return cached[1]


class MathScoreDoFn(beam.DoFn):
    """Document -> the same Document with `math_score` set."""

    def __init__(self, model_path: str):
        self.model_path = model_path

    def setup(self):
        self.model, self.normalization = shared_model(self.model_path)
        self.scored = Metrics.counter(SCORE_STEP, "scored")
        self.errors = Metrics.counter(SCORE_STEP, "score_errors")

    def process(self, document: Document):
        try:
            document.math_score = math_probability(self.model, self.normalization(document.text))
        except Exception:  # one unscorable document must not fail the job: keep it, unselected
            self.errors.inc()
            document.math_score = 0.0
        self.scored.inc()
        yield document
