"""Recall scoring throughput: the Beam scoring pass vs raw fastText `predict` on the same texts.

Texts: real documentation pages (the Debian packages the recall tests use: python-scipy-doc,
python-mpmath-doc, python3.11-doc, git-doc), extracted to text once and repeated to `--pages`
documents, written as Parquet in the documents/ layout (not timed). A model is trained with the
paper's settings (dim 256, lr 0.1, word n-grams 3, min count 3, 3 epochs; math packages vs
others) and saved as the recall loop saves it (not timed). Then, in one run:
- raw: one Python loop, `predict` on each text, (a) on pre-normalised texts and (b) normalising
  each text first (what any caller must do: fastText refuses newlines);
- beam: `ReadDocuments -> MathScoreDoFn -> count` on the direct runner in one process
  (FnApiRunner in_memory, one worker: one core), wall time including pipeline start-up and
  Parquet reading.
Prints ONE JSON line: pages/s per core of each, and beam/raw time ratios (target: beam within
1.3x of raw normalise+predict). The machine may be shared: compare the ratios of one run.

    python benchmarks/recall_scoring.py                    # 10k pages (~1 min)
    python benchmarks/recall_scoring.py --pages 100000 --work-dir /tmp/recall_scoring
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beam_pipelines.document import Document, documents_to_table, estimate_tokens, stable_id  # noqa: E402
from beam_pipelines.io.parquet import ReadDocuments  # noqa: E402
from beam_pipelines.recall.config import RecallFastTextConfig  # noqa: E402
from beam_pipelines.recall.fasttext_model import (  # noqa: E402
    LABEL_MATH,
    LABEL_OTHER,
    TextNormalization,
    load_model,
    train_classifier,
    write_model_metadata,
)
from beam_pipelines.transforms.classify import MathScoreDoFn  # noqa: E402
from beam_pipelines.transforms.extract import domain_of, extract_text  # noqa: E402
from tests.support import debian_doc_pages  # noqa: E402

MATH_PACKAGES = ("python-scipy-doc", "python-mpmath-doc")
PACKAGES = MATH_PACKAGES + ("python3.11-doc", "git-doc")


# Progress on stderr; stdout carries only the JSON line of figures.
log = logging.getLogger("recall_scoring")


def real_documents(per_package: int):
    documents = []
    for package in PACKAGES:
        for url, html, _ in debian_doc_pages(package, limit=per_package):
            result = extract_text(html.decode("utf-8", "replace"), url, main_content=True)
            if len(result.text) >= 200:
                documents.append(
                    (
                        package in MATH_PACKAGES,
                        Document(
                            id=stable_id(url),
                            url=url,
                            domain=domain_of(url),
                            text=result.text,
                            title=result.title,
                            token_estimate=estimate_tokens(result.text),
                        ),
                    )
                )
    return documents


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[recall_scoring] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--per-package", type=int, default=400, help="distinct pages extracted per package")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="recall-scoring-"))
    work.mkdir(parents=True, exist_ok=True)
    labelled = real_documents(args.per_package)
    log.info(f"{len(labelled)} distinct real pages extracted; repeating them to {args.pages} documents")
    settings = RecallFastTextConfig(threads=1)
    normalization = TextNormalization.from_config(settings)
    train_file = work / "train.txt"
    with open(train_file, "w", encoding="utf-8") as output:
        for is_math, document in labelled:
            output.write(f"{LABEL_MATH if is_math else LABEL_OTHER} {normalization(document.text)}\n")
    model, _ = train_classifier(str(train_file), settings)
    model_path = str(work / "model.bin")
    model.save_model(model_path)
    write_model_metadata(model_path, normalization, {"benchmark": True})

    documents = []
    for index in range(args.pages):
        document = labelled[index % len(labelled)][1]
        documents.append(document.replace(id=f"{document.id}-{index}"))
    shard_dir = work / "pool" / "documents"
    shutil.rmtree(shard_dir, ignore_errors=True)
    shard_dir.mkdir(parents=True)
    for shard, start in enumerate(range(0, len(documents), 5000)):
        pq.write_table(documents_to_table(documents[start : start + 5000]), shard_dir / f"part-{shard:05d}.parquet")
    texts = [d.text for d in documents]
    mean_characters = sum(map(len, texts)) / len(texts)
    del documents

    model, normalization = load_model(model_path)
    normalized = [normalization(text) for text in texts]
    started = time.perf_counter()
    for line in normalized:
        model.predict(line, k=2)
    raw_predict_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for text in texts:
        model.predict(normalization(text), k=2)
    raw_seconds = time.perf_counter() - started
    log.info(f"raw: {raw_seconds:.2f} s with normalisation, {raw_predict_seconds:.2f} s predict only")

    counted = work / "beam_count"
    started = time.perf_counter()
    with beam.Pipeline(
        runner="FnApiRunner", argv=["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    ) as pipeline:
        (
            pipeline
            | ReadDocuments(str(work / "pool"))
            | beam.ParDo(MathScoreDoFn(model_path))
            | beam.combiners.Count.Globally()
            | beam.io.WriteToText(str(counted), shard_name_template="", num_shards=1)
        )
    beam_seconds = time.perf_counter() - started
    scored = int(counted.read_text().strip())
    if scored != len(texts):
        raise SystemExit(f"beam scored {scored} of {len(texts)} documents")
    log.info(f"beam: {beam_seconds:.2f} s")

    print(
        json.dumps(
            {
                "benchmark": "recall_scoring",
                "pages": len(texts),
                "distinct_pages": len(labelled),
                "mean_characters": round(mean_characters),
                "model": {
                    "dim": settings.dim,
                    "word_ngrams": settings.word_ngrams,
                    "bucket": settings.bucket,
                    "bytes": os.path.getsize(model_path),
                },
                "beam_pages_per_second_per_core": round(len(texts) / beam_seconds, 1),
                "raw_normalize_predict_pages_per_second": round(len(texts) / raw_seconds, 1),
                "raw_predict_only_pages_per_second": round(len(texts) / raw_predict_seconds, 1),
                "beam_over_raw_time": round(beam_seconds / raw_seconds, 3),
                "beam_over_raw_predict_only_time": round(beam_seconds / raw_predict_seconds, 3),
                "target_beam_over_raw_time": 1.3,
                "beam_includes": "pipeline start-up, Parquet read, Document conversion, normalisation, predict, count",
                "cores": 1,
            }
        )
    )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
