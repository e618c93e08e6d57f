"""The ledger convention on a real Beam runner: kept, dropped with a reason, dead-lettered on an
exception, and a summary whose counts add up."""

import glob
import json

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.accounting import Drop, FilterDoFn, Ledger, build_summary, format_summary, tally_counters
from beam_pipelines.document import Document


class KeepEvenLength(FilterDoFn):
    step = "09_example"

    def decide(self, document):
        if "boom" in document.text:
            raise ValueError("cannot judge this one")
        if len(document.text) % 2:
            return Drop("odd_length", str(len(document.text)))
        document.title = "checked"
        return document


def test_filter_routes_every_document_and_summary_balances(tmp_path):
    texts = ["aa", "abc", "boom!", "abcd", "x", "boom boom"]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    ledger = Ledger(str(tmp_path))
    documents = pipeline | beam.Create([Document(id=str(i), text=t) for i, t in enumerate(texts)])
    kept = ledger.apply(documents, KeepEvenLength())
    kept | beam.Map(lambda d: json.dumps([d.id, d.title])) | beam.io.WriteToText(str(tmp_path / "kept"))
    ledger.write(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    summary = build_summary("example", tally_counters(result), ["09_example"], 0.0)
    step = summary["steps"]["09_example"]
    assert step["in"] == 6 and step["kept"] == 2
    assert step["dropped"] == {"odd_length": 2} and step["dead_lettered"] == {"exception": 2}
    assert summary["balanced"]
    # The input's row count known apart from Beam: a read that lost rows must unbalance the summary.
    assert build_summary("example", tally_counters(result), ["09_example"], 0.0, input_rows=6)["balanced"]
    lossy = build_summary("example", tally_counters(result), ["09_example"], 0.0, input_rows=7)
    assert not lossy["balanced"] and lossy["input_rows"] == 7
    assert "holds 7 rows but the pipeline read 6" in format_summary(lossy)
    kept_rows = [json.loads(line) for p in glob.glob(str(tmp_path / "kept*")) for line in open(p)]
    assert sorted(kept_rows) == [["0", "checked"], ["3", "checked"]]
    removed = [
        r for p in glob.glob(str(tmp_path / "removed/09_example/*.parquet")) for r in pq.read_table(p).to_pylist()
    ]
    assert sorted((r["id"], r["removed_reason"], r["removed_detail"]) for r in removed) == [
        ("1", "odd_length", "3"),
        ("4", "odd_length", "1"),
    ]
    letters = [
        json.loads(line) for p in glob.glob(str(tmp_path / "dead_letter/09_example/*.jsonl")) for line in open(p)
    ]
    assert sorted(letter["source"] for letter in letters) == ["2", "5"]
    assert all("ValueError: cannot judge this one" in letter["message"] for letter in letters)
