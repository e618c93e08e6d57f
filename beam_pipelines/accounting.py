"""Where every record goes: kept, dropped with a reason, or dead-lettered with an error.

The convention of every corpus step:
- a step's pure core returns the (possibly updated) `Document` to keep it, or a `Drop(reason)`;
- each drop bumps the Beam counter `<step>/dropped_<reason>` and its record is written to
  `removed/<step>/` (Parquet, the document schema plus step, reason and detail);
- an input the step cannot process at all becomes a `DeadLetter` (JSON lines in `dead_letter/`)
  and bumps `<step>/dead_letter_<kind>`: one bad record never fails the job and is never lost;
- `<step>/in` and `<step>/kept` are counted too, so the run summary can prove, per step and for
  the whole run, that in = kept + dropped + dead-lettered.

Step names are `NN_name` (`04_quality`): the number orders `removed/` folders the way the steps run.
Cost: counters and tagged outputs only; no step holds more than one record here.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from beam_pipelines.document import REMOVED_SCHEMA, Document, removed_row

KEPT = "kept"
REMOVED = "removed"
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Drop:
    """A filter's verdict to remove a document. `reason` becomes a counter and a folder column."""

    reason: str
    detail: str = ""


@dataclass(slots=True)
class DeadLetter:
    """An input that could not be turned into a document, kept with the error for inspection."""

    step: str
    kind: str  # short machine name: truncated_gzip, bad_http_header, record_too_large, ...
    message: str
    source: str = ""  # file or document id
    offset: int = -1
    record_id: str = ""
    url: str = ""
    preview: str = ""  # the first bytes, escaped, so a reviewer can see what was there

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def bytes_preview(data: bytes, limit: int = 256) -> str:
    return data[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")


class StepCounters:
    """The Beam counters of one step, named the way the summary reads them."""

    def __init__(self, step: str):
        self.step = step
        self._in = Metrics.counter(step, "in")
        self._kept = Metrics.counter(step, "kept")
        self._by_name: dict[str, Any] = {}

    def _counter(self, name: str):
        counter = self._by_name.get(name)
        if counter is None:
            counter = self._by_name[name] = Metrics.counter(self.step, name)
        return counter

    def count_in(self, n: int = 1) -> None:
        self._in.inc(n)

    def count_kept(self, n: int = 1) -> None:
        self._kept.inc(n)

    def count_dropped(self, reason: str, n: int = 1) -> None:
        self._counter(f"dropped_{reason}").inc(n)

    def count_dead_letter(self, kind: str, n: int = 1) -> None:
        self._counter(f"dead_letter_{kind}").inc(n)

    def count(self, name: str, n: int = 1) -> None:
        """A free-form statistic of the step (not part of the balance)."""
        self._counter(name).inc(n)


class FilterDoFn(beam.DoFn):
    """Runs a pure `decide(document) -> Document | Drop` core and routes the outcome.

    Subclasses set `step` and implement `decide`; heavy state (models) belongs in `setup()`.
    Outputs: main = kept documents, `REMOVED` = removed rows, `DEAD_LETTER` = JSON lines.
    """

    step: str = "00_unnamed"

    def __init__(self) -> None:
        self.counters: StepCounters | None = None

    def setup(self) -> None:
        self.counters = StepCounters(self.step)

    def decide(self, document: Document) -> Document | Drop:  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, document: Document):
        counters = self.counters
        counters.count_in()
        try:
            outcome = self.decide(document)
        except Exception as error:  # one bad document must not fail the job
            counters.count_dead_letter("exception")
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                DeadLetter(
                    step=self.step,
                    kind="exception",
                    message=f"{type(error).__name__}: {error} | {_last_frame(error)}",
                    source=document.id,
                    url=document.url,
                    preview=document.text[:200],
                ).to_json(),
            )
            return
        if isinstance(outcome, Drop):
            counters.count_dropped(outcome.reason)
            yield beam.pvalue.TaggedOutput(REMOVED, removed_row(document, self.step, outcome.reason, outcome.detail))
        else:
            counters.count_kept()
            yield outcome


def _last_frame(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


class Ledger:
    """Collects the removed and dead-letter outputs of every step of one pipeline and writes them.

    `ledger.apply(pcoll, SomeFilter())` returns the kept documents; at the end `ledger.write()`
    writes `removed/<step>/` and `dead_letter/<step>/` under `output_dir`.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir.rstrip("/")
        self.removed: dict[str, list[beam.PCollection]] = {}
        self.dead_letters: dict[str, list[beam.PCollection]] = {}

    def apply(self, documents: beam.PCollection, step_fn: FilterDoFn) -> beam.PCollection:
        outputs = documents | step_fn.step >> beam.ParDo(step_fn).with_outputs(REMOVED, DEAD_LETTER, main=KEPT)
        self.add(step_fn.step, removed=outputs[REMOVED], dead_letters=outputs[DEAD_LETTER])
        return outputs[KEPT]

    def add(
        self,
        step: str,
        removed: beam.PCollection | None = None,
        dead_letters: beam.PCollection | None = None,
    ) -> None:
        if removed is not None:
            self.removed.setdefault(step, []).append(removed)
        if dead_letters is not None:
            self.dead_letters.setdefault(step, []).append(dead_letters)

    def write(self, pipeline: beam.Pipeline) -> None:
        for step, collections in sorted(self.removed.items()):
            rows = _flatten(collections, f"Flatten removed {step}")
            rows | f"Write removed {step}" >> beam.io.WriteToParquet(
                f"{self.output_dir}/removed/{step}/part",
                schema=REMOVED_SCHEMA,
                file_name_suffix=".parquet",
            )
        for step, collections in sorted(self.dead_letters.items()):
            lines = _flatten(collections, f"Flatten dead letters {step}")
            lines | f"Write dead letters {step}" >> beam.io.WriteToText(
                f"{self.output_dir}/dead_letter/{step}/part", file_name_suffix=".jsonl"
            )


def _flatten(collections: list[beam.PCollection], label: str) -> beam.PCollection:
    if len(collections) == 1:
        return collections[0]
    return tuple(collections) | label >> beam.Flatten()


# ----------------------------------------------------------------------------------------------
# The run summary


@dataclass
class StepTally:
    step: str
    documents_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.documents_in == self.kept + sum(self.dropped.values()) + sum(self.dead_lettered.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "in": self.documents_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "dead_lettered": dict(sorted(self.dead_lettered.items())),
            "other": dict(sorted(self.other.items())),
            "balanced": self.balanced,
        }


def tally_counters(result: beam.runners.runner.PipelineResult) -> dict[str, StepTally]:
    """Read every step's counters from a finished pipeline (committed values where the runner
    reports them, attempted otherwise)."""
    tallies: dict[str, StepTally] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        step = counter.key.metric.namespace
        name = counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        tally = tallies.setdefault(step, StepTally(step))
        if name == "in":
            tally.documents_in += value
        elif name == "kept":
            tally.kept += value
        elif name.startswith("dropped_"):
            reason = name.removeprefix("dropped_")
            tally.dropped[reason] = tally.dropped.get(reason, 0) + value
        elif name.startswith("dead_letter_"):
            kind = name.removeprefix("dead_letter_")
            tally.dead_lettered[kind] = tally.dead_lettered.get(kind, 0) + value
        else:
            tally.other[name] = tally.other.get(name, 0) + value
    return tallies


def build_summary(
    pipeline_name: str,
    tallies: dict[str, StepTally],
    step_order: Iterable[str],
    started_at: float,
    extra: dict[str, Any] | None = None,
    input_rows: int | None = None,
) -> dict[str, Any]:
    """The summary JSON: per-step tallies in order and whole-run totals that must add up.

    The first step's `in` is the run's input; the last step's `kept` is its output; every drop
    and dead letter of every step is counted once. Steps that saw no input have no counters and
    appear with zeros. `input_rows`, where the input's size is known without Beam (the row count
    in the Parquet footers), must equal the first step's `in`: a runner that drops part of a read
    (seen once on the multi-process direct runner, see benchmarks/results/dedup_scale_100k_lost_documents.json)
    then makes the summary unbalanced instead of passing silently.
    """
    ordered = [tallies.get(step, StepTally(step)) for step in step_order]
    chained = all(later.documents_in == earlier.kept for earlier, later in zip(ordered, ordered[1:]))
    total_in = ordered[0].documents_in if ordered else 0
    total_kept = ordered[-1].kept if ordered else 0
    total_dropped = sum(sum(t.dropped.values()) for t in ordered)
    total_dead = sum(sum(t.dead_lettered.values()) for t in ordered)
    summary: dict[str, Any] = {
        "pipeline": pipeline_name,
        "elapsed_seconds": round(time.time() - started_at, 3),
        "totals": {
            "in": total_in,
            "kept": total_kept,
            "dropped": total_dropped,
            "dead_lettered": total_dead,
        },
        "balanced": total_in == total_kept + total_dropped + total_dead
        and chained
        and all(t.balanced for t in ordered)
        and (input_rows is None or input_rows == total_in),
        "steps": {t.step: t.as_dict() for t in ordered},
    }
    if input_rows is not None:
        summary["input_rows"] = input_rows
    if extra:
        summary.update(extra)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few human lines for the console: one per step, then the totals."""
    lines = []
    for step, tally in summary["steps"].items():
        dropped = ", ".join(f"{k}={v}" for k, v in tally["dropped"].items()) or "-"
        dead = ", ".join(f"{k}={v}" for k, v in tally["dead_lettered"].items()) or "-"
        lines.append(
            f"  {step:<22} in={tally['in']:<8} kept={tally['kept']:<8} dropped: {dropped}; dead letters: {dead}"
        )
    totals = summary["totals"]
    lines.append(
        f"  total: in={totals['in']} = kept {totals['kept']} + dropped {totals['dropped']}"
        f" + dead-lettered {totals['dead_lettered']}  ({'balanced' if summary['balanced'] else 'NOT BALANCED'})"
    )
    if summary.get("input_rows", totals["in"]) != totals["in"]:
        lines.append(f"  the input holds {summary['input_rows']} rows but the pipeline read {totals['in']}")
    return "\n".join(lines)
