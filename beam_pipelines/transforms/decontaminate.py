"""Benchmark decontamination with DeepSeekMath's n-gram rule (step 08_decontaminate).

The rule (DeepSeekMath, section 2.1): a text segment that contains an `ngram`-gram (10) of a
benchmark item - a question or an answer of GSM8K, MATH, CMATH, AGIEval, ... - is removed;
items shorter than `ngram` grams but at least `min_item_ngram` (3) are matched as a whole.
"As a whole" is read as: the segment *is* the item (`short_item_match=segment`, default).
Matching a 3-gram answer such as "\\frac{1}{2}" anywhere (`contains`) would strip most
ordinary math from a math corpus; it is available for those who want the stricter reading.

Both sides are normalised the same way (`minhash.word_tokens`: Unicode NFKC, lower case,
punctuation and whitespace ignored, letters and digits split, CJK one token per character),
so a copy with other spacing, case, punctuation or LaTeX braces still matches; a near miss
(one word changed in every window of 10) does not.

Pure core:
- `read_benchmark(source)` -> `BenchmarkItem`s from local JSONL/JSON files in the public
  formats (GSM8K `question`/`answer`, MATH `problem`/`solution` one file per problem or
  JSONL, CMATH `question`/`golden`, AGIEval `passage`/`question`/`options`/`answer`, MMLU,
  MathQA, or `auto`); a directory is searched recursively.
- `ContaminationIndex.build(items)`: sorted 64-bit hashes of every item's n-grams (and of the
  whole short items), each with the first item that has it; `find(text)` -> the matches per
  segment.
- `decontaminate(document, index, level)` -> the document with the matching segments removed,
  or a `Drop`, plus one record per removed segment naming the benchmark item it matched.

Beam: the index is built once on the driver, written next to the output, and broadcast to
every worker as a side input (`load_index`); `DecontaminateDoFn` routes documents through the
accounting convention (a modified document is *kept*: `documents_modified` and
`segments_removed` count the changes; a document left empty is dropped with a reason), and
`ContaminationReport` combines per-benchmark counts.

Cost model: the index holds one 8-byte hash + one 4-byte item number per distinct benchmark
n-gram (GSM8K + MATH test sets: ~1M n-grams, ~12 MB) and is the only per-worker state; it grows
with the benchmarks, never with the corpus. Per document: one hash per token and one
vectorised binary search per n-gram, O(L log M). The report is a per-benchmark combine whose
state is bounded by the number of benchmark items.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import xxhash
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines.accounting import Drop, FilterDoFn
from beam_pipelines.document import Document, estimate_tokens
from beam_pipelines.transforms.config import FORMAT_FIELDS
from beam_pipelines.transforms.exact_dedup import content_hash
from beam_pipelines.transforms.minhash import word_tokens
from stack_common.errors import ConfigError

DECONTAMINATE_STEP = "08_decontaminate"
CONTAMINATED_REASON = "benchmark_contamination"
EMPTIED_REASON = "empty_after_decontamination"
MATCHES = "matches"
TOUCHES = "touches"

_AUTO_QUESTION = ("question", "problem", "Problem", "query", "prompt", "passage", "input", "instruction")
_AUTO_ANSWER = ("answer", "solution", "Rationale", "rationale", "golden", "output", "target", "response")
_ID_KEYS = ("id", "unique_id", "idx", "ID", "problem_id", "question_id", "task_id")
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
_LIST_KEYS = ("data", "examples", "instances", "test", "questions", "problems", "rows")


@dataclass(frozen=True, slots=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    field: str  # "question" or "answer"
    text: str


# ----------------------------------------------------------------------------------------------
# Reading benchmarks


def benchmark_files(path: str) -> list[str]:
    """JSON/JSONL files of a benchmark path: a file, a glob, or a directory (recursive)."""
    wanted = (".jsonl", ".json")
    if "://" not in path and os.path.isdir(path):
        found = []
        for directory, _, names in os.walk(path):
            found += [os.path.join(directory, n) for n in names if n.endswith(wanted)]
        return sorted(found)
    if "://" not in path:
        return sorted(p for p in glob.glob(path, recursive=True) if p.endswith(wanted) and os.path.isfile(p))
    pattern = path if any(c in path for c in "*?[") else f"{path.rstrip('/')}/**"
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list if m.path.endswith(wanted))


def _records(path: str) -> Iterator[tuple[str, dict]]:
    """(position, record) of one file; a file that is not valid JSON fails with its line."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8-sig")
    if path.endswith(".jsonl"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"benchmark file {path}:{number} is not JSON ({error.msg})") from None
            if isinstance(record, dict):
                yield str(number), record
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"benchmark file {path}:{error.lineno} is not JSON ({error.msg})") from None
    if isinstance(value, dict):
        listed = next((value[k] for k in _LIST_KEYS if isinstance(value.get(k), list)), None)
        if listed is None:
            yield "", value  # one record per file (MATH's layout): the file names the item
            return
        value = listed
    if isinstance(value, list):
        for index, record in enumerate(value):
            if isinstance(record, dict):
                yield str(index), record


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(_field_text(v) for v in value)
    if isinstance(value, dict):
        return ""
    return str(value)


def read_benchmark(
    name: str,
    path: str,
    format: str = "auto",
    question_fields: Sequence[str] = (),
    answer_fields: Sequence[str] = (),
    include_answers: bool = True,
) -> tuple[list[BenchmarkItem], list[str]]:
    """Items of one benchmark and the files they came from. Raises ConfigError for unreadable
    files or files in which none of the fields exists."""
    questions, answers = FORMAT_FIELDS.get(format, (_AUTO_QUESTION, _AUTO_ANSWER))
    questions = tuple(question_fields) or questions
    answers = tuple(answer_fields) or answers
    files = benchmark_files(path)
    items: list[BenchmarkItem] = []
    root = path if "://" not in path and os.path.isdir(path) else os.path.dirname(path)
    for file in files:
        relative = os.path.relpath(file, root) if "://" not in file else file.rsplit("/", 1)[-1]
        found = 0
        for position, record in _records(file):
            item_id = next((str(record[k]) for k in _ID_KEYS if record.get(k) not in (None, "")), None)
            item_id = item_id or (f"{relative}:{position}" if position else relative)
            for field_name, keys in (("question", questions), ("answer", answers if include_answers else ())):
                text = "\n".join(t for t in (_field_text(record.get(k)) for k in keys) if t.strip())
                if not text.strip():
                    continue
                found += 1
                items.append(BenchmarkItem(name, item_id, field_name, text))
                # GSM8K solutions carry calculator annotations (`= <<48-9=39>>39`) that copies on
                # the web mostly lack: index the cleaned text as well.
                cleaned = _CALCULATOR_ANNOTATION.sub("", text)
                if cleaned != text:
                    items.append(BenchmarkItem(name, item_id, field_name, cleaned))
        if not found:
            raise ConfigError(
                f"benchmark {name!r}: no {'/'.join(questions + answers)} field in {file} "
                f"(set the benchmark's format or question_fields/answer_fields)"
            )
    return items, files


# ----------------------------------------------------------------------------------------------
# The n-gram index

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash is a bijection per step


def token_hashes(tokens: Sequence[str]) -> np.ndarray:
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(t.encode("utf-8", "surrogatepass")) for t in tokens), dtype=np.uint64, count=len(tokens))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every window of `n` token hashes (polynomial, wrap-around intended)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            out = out * _MULTIPLIER + hashes[k : k + count]
    return out


def whole_hash(hashes: np.ndarray) -> int:
    return int(ngram_hashes(hashes, len(hashes))[0]) if len(hashes) else 0


@dataclass
class ContaminationIndex:
    """What every worker receives: n-gram hashes of the benchmarks and who they belong to."""

    ngram: int
    min_item_ngram: int
    short_item_match: str
    items: list[tuple[str, str, str]]  # (benchmark, item_id, field) by item number
    long_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    long_owners: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    # Short items: length -> (sorted whole-item hashes, owners).
    short_tables: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    item_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, items: Iterable[BenchmarkItem], ngram: int, min_item_ngram: int, short_item_match: str
    ) -> "ContaminationIndex":
        index = cls(ngram, min_item_ngram, short_item_match, [])
        long_parts: list[np.ndarray] = []
        long_owner_parts: list[np.ndarray] = []
        short: dict[int, list[tuple[int, int]]] = {}
        seen: set[tuple[str, str, str]] = set()
        for item in items:
            counts = index.item_counts.setdefault(item.benchmark, {"items": 0, "long": 0, "short": 0, "too_short": 0})
            key = (item.benchmark, item.item_id, item.field)
            if key in seen:  # a second text of the same item (e.g. GSM8K without annotations)
                counts = {"items": 0, "long": 0, "short": 0, "too_short": 0}
            seen.add(key)
            counts["items"] += 1
            hashes = token_hashes(word_tokens(item.text))
            if len(hashes) < min_item_ngram:
                counts["too_short"] += 1
                continue
            number = len(index.items)
            index.items.append(key)
            if len(hashes) >= ngram:
                counts["long"] += 1
                grams = ngram_hashes(hashes, ngram)
                long_parts.append(grams)
                long_owner_parts.append(np.full(len(grams), number, dtype=np.int32))
            else:
                counts["short"] += 1
                short.setdefault(len(hashes), []).append((whole_hash(hashes), number))
        if long_parts:
            index.long_keys, index.long_owners = _first_owner(
                np.concatenate(long_parts), np.concatenate(long_owner_parts)
            )
        for length, pairs in short.items():
            keys = np.array([k for k, _ in pairs], dtype=np.uint64)
            owners = np.array([o for _, o in pairs], dtype=np.int32)
            index.short_tables[length] = _first_owner(keys, owners)
        return index

    @property
    def ngram_count(self) -> int:
        return int(self.long_keys.size + sum(keys.size for keys, _ in self.short_tables.values()))

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(payload: bytes) -> "ContaminationIndex":
        return pickle.loads(payload)

    def find(self, segments: Sequence[str]) -> dict[int, tuple[int, str]]:
        """segment number -> (item number, matched normalised text) for contaminated segments."""
        tokens: list[str] = []
        segment_of: list[int] = []
        starts: list[int] = []
        for number, segment in enumerate(segments):
            segment_tokens = word_tokens(segment)
            starts.append(len(tokens))
            tokens += segment_tokens
            segment_of += [number] * len(segment_tokens)
        starts.append(len(tokens))
        if not tokens:
            return {}
        hashes = token_hashes(tokens)
        segment_ids = np.array(segment_of, dtype=np.int64)
        found: dict[int, tuple[int, str]] = {}
        if self.long_keys.size:
            self._windows(hashes, segment_ids, tokens, self.ngram, self.long_keys, self.long_owners, found)
        for length, (keys, owners) in self.short_tables.items():
            if self.short_item_match == "contains":
                self._windows(hashes, segment_ids, tokens, length, keys, owners, found)
                continue
            for number in range(len(segments)):
                start, end = starts[number], starts[number + 1]
                if end - start == length and number not in found:
                    owner = _lookup(keys, owners, np.array([whole_hash(hashes[start:end])], dtype=np.uint64))
                    if owner[0] >= 0:
                        found[number] = (int(owner[0]), " ".join(tokens[start:end]))
        return found

    @staticmethod
    def _windows(hashes, segment_ids, tokens, n, keys, owners, found) -> None:
        grams = ngram_hashes(hashes, n)
        if not grams.size:
            return
        # Windows that cross a segment boundary belong to no segment.
        inside = segment_ids[: grams.size] == segment_ids[n - 1 :]
        hit_owners = _lookup(keys, owners, grams)
        for position in np.flatnonzero((hit_owners >= 0) & inside):
            segment = int(segment_ids[position])
            if segment not in found:
                found[segment] = (int(hit_owners[position]), " ".join(tokens[position : position + n]))


def _first_owner(keys: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((owners, keys))
    keys, owners = keys[order], owners[order]
    unique_keys, first = np.unique(keys, return_index=True)
    return unique_keys, owners[first]


def _lookup(keys: np.ndarray, owners: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Owner of each query hash, -1 where absent (vectorised binary search)."""
    if not keys.size:
        return np.full(queries.shape, -1, dtype=np.int64)
    positions = np.searchsorted(keys, queries)
    positions[positions == keys.size] = 0
    return np.where(keys[positions] == queries, owners[positions].astype(np.int64), -1)


# ----------------------------------------------------------------------------------------------
# One document

_PARAGRAPH_SPLIT = re.compile(r"(\n[ \t\r\f\v]*\n\s*)")
_LINE_SPLIT = re.compile(r"(\n+)")


def split_segments(text: str, segment_by: str) -> tuple[list[str], list[str]]:
    """Segments and the separators after each (so that text == ''.join(interleaved))."""
    parts = (_PARAGRAPH_SPLIT if segment_by == "paragraph" else _LINE_SPLIT).split(text)
    segments = parts[0::2]
    separators = parts[1::2] + [""]
    return segments, separators


@dataclass
class Decontaminated:
    document: Document | Drop
    # One record per removed segment (or per matching segment of a dropped document).
    matches: list[dict] = field(default_factory=list)
    segments_removed: int = 0


def decontaminate(document: Document, index: ContaminationIndex, level: str, segment_by: str) -> Decontaminated:
    segments, separators = split_segments(document.text, segment_by)
    found = index.find(segments)
    if not found:
        return Decontaminated(document)
    matches = []
    for number, (owner, ngram_text) in sorted(found.items()):
        benchmark, item_id, item_field = index.items[owner]
        matches.append(
            {
                "document_id": document.id,
                "url": document.url,
                "benchmark": benchmark,
                "item_id": item_id,
                "field": item_field,
                "segment": number,
                "matched": ngram_text,
                "segment_text": segments[number][:2000],
                "action": "document_dropped" if level == "document" else "segment_removed",
            }
        )
    first = matches[0]
    detail = json.dumps({k: first[k] for k in ("benchmark", "item_id", "field", "matched")}, ensure_ascii=False)
    if level == "document":
        return Decontaminated(Drop(CONTAMINATED_REASON, detail), matches)
    kept = [
        segment + separator
        for number, (segment, separator) in enumerate(zip(segments, separators))
        if number not in found
    ]
    text = "".join(kept).strip()
    if not text:
        for match in matches:
            match["action"] = "document_dropped"
        return Decontaminated(Drop(EMPTIED_REASON, detail), matches, len(found))
    changes: dict[str, Any] = {"text": text, "token_estimate": estimate_tokens(text)}
    if document.content_hash:
        changes["content_hash"] = content_hash(text)
    return Decontaminated(document.replace(**changes), matches, len(found))


# ----------------------------------------------------------------------------------------------
# Beam


def load_index(path: str) -> ContaminationIndex:
    with FileSystems.open(path) as handle:
        return ContaminationIndex.from_bytes(handle.read())


class DecontaminateDoFn(FilterDoFn):
    """Kept (possibly shortened) documents; `REMOVED` rows; `MATCHES` records (one dict per
    matching segment); `TOUCHES` (benchmark, per-document totals) for the report."""

    step = DECONTAMINATE_STEP

    def __init__(self, level: str, segment_by: str):
        super().__init__()
        self.level = level
        self.segment_by = segment_by

    def setup(self):
        super().setup()
        self.modified = Metrics.counter(self.step, "documents_modified")
        self.segments_removed = Metrics.counter(self.step, "segments_removed")
        self._index = None
        self._matches: list[dict] = []

    def process(self, document: Document, index: ContaminationIndex):
        self._index = index
        self._matches = []
        yield from super().process(document)
        touches: dict[str, dict] = {}
        for match in self._matches:
            yield beam.pvalue.TaggedOutput(MATCHES, match)
            touch = touches.setdefault(match["benchmark"], {"segments": 0, "dropped": 0, "items": {}})
            touch["segments"] += 1
            touch["dropped"] = int(match["action"] == "document_dropped")
            key = f"{match['item_id']}|{match['field']}"
            touch["items"][key] = touch["items"].get(key, 0) + 1
        for benchmark, touch in touches.items():
            yield beam.pvalue.TaggedOutput(TOUCHES, (benchmark, touch))

    def decide(self, document: Document) -> Document | Drop:
        outcome = decontaminate(document, self._index, self.level, self.segment_by)
        self._matches = outcome.matches
        if not isinstance(outcome.document, Drop) and outcome.segments_removed:
            self.modified.inc()
            self.segments_removed.inc(outcome.segments_removed)
        return outcome.document


class _BenchmarkTotals(beam.CombineFn):
    """Per benchmark: matching segments, documents touched and dropped, and how often each
    item matched. Inputs are per-document totals, so the state is bounded by the benchmark's
    size, not by the number of contaminated documents."""

    def create_accumulator(self):
        return {"segments": 0, "documents": 0, "dropped": 0, "items": {}}

    def add_input(self, accumulator, touch):
        accumulator["segments"] += touch["segments"]
        accumulator["documents"] += 1
        accumulator["dropped"] += touch["dropped"]
        for key, count in touch["items"].items():
            accumulator["items"][key] = accumulator["items"].get(key, 0) + count
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for name in ("segments", "documents", "dropped"):
                merged[name] += accumulator[name]
            for key, count in accumulator["items"].items():
                merged["items"][key] = merged["items"].get(key, 0) + count
        return merged

    def extract_output(self, accumulator):
        top = sorted(accumulator["items"].items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        return {
            "segments_matched": accumulator["segments"],
            "documents_touched": accumulator["documents"],
            "documents_dropped": accumulator["dropped"],
            "items_matched": len(accumulator["items"]),
            "top_items": [
                {"item": key.rsplit("|", 1)[0], "field": key.rsplit("|", 1)[1], "segments": count} for key, count in top
            ],
        }


class ContaminationReport(beam.PTransform):
    """Per-document touches -> one JSON line per benchmark with its totals."""

    def expand(self, touches):
        return (
            touches
            | "Totals per benchmark" >> beam.CombinePerKey(_BenchmarkTotals())
            | "Report lines"
            >> beam.MapTuple(lambda name, totals: json.dumps({"benchmark": name, **totals}, ensure_ascii=False))
        )
