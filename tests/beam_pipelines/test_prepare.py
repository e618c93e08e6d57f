"""The prepare pipeline end to end on real HTML and on a corrupted WARC, with the direct runner
in multi-processing mode: math survives, and every record is accounted for."""

import glob
import gzip
import html as html_lib
import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.io.parquet import iter_documents, read_json
from beam_pipelines.io.warc import iter_warc_records, write_html_warc
from beam_pipelines.stages.prepare import STEPS, run_prepare
from stack_common.cli import compose_config
from tests.support import debian_doc_pages, run_module

MATHJAX_SPAN = re.compile(r'<(?:span|div) class="math notranslate nohighlight">(.*?)</(?:span|div)>', re.S)


def prepare(work_dir: Path, warc: Path, *overrides: str):
    config = compose_config(
        "prepare",
        [f"corpus.work_dir={work_dir}", f"corpus.warc_inputs=[{warc}]", "beam.direct_num_workers=2", *overrides],
        register_configs,
    )
    return config, run_prepare(config)


def assert_files_match_summary(output_dir: str, summary: dict):
    """The counters and the files agree: kept rows, removed rows per step, dead-letter lines."""
    kept_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(f"{output_dir}/documents/*.parquet"))
    assert kept_rows == summary["totals"]["kept"]
    for step, tally in summary["steps"].items():
        removed = sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(f"{output_dir}/removed/{step}/*.parquet"))
        assert removed == sum(tally["dropped"].values()), step
        dead = sum(1 for p in glob.glob(f"{output_dir}/dead_letter/{step}/*.jsonl") for line in open(p) if line.strip())
        assert dead == sum(tally["dead_lettered"].values()), step


@pytest.fixture(scope="module")
def scipy_and_python_pool(tmp_path_factory):
    scipy = debian_doc_pages("python-scipy-doc")
    with_math = [p for p in scipy if b'class="math notranslate nohighlight"' in p[1]]
    without_math = [p for p in scipy if b'class="math notranslate nohighlight"' not in p[1]][:200]
    python = debian_doc_pages("python3.11-doc")
    work = tmp_path_factory.mktemp("debian")
    warc = work / "debian-docs.warc.gz"
    write_html_warc(str(warc), with_math + without_math + python)
    config, summary = prepare(work, warc)
    return config, summary, with_math, len(with_math) + len(without_math) + len(python)


@pytest.mark.integration
def test_mathjax_tex_survives_on_real_scipy_pages(scipy_and_python_pool):
    config, _, with_math, _ = scipy_and_python_pool
    texts = {d.url: " ".join(d.text.split()) for d in iter_documents(config.output_dir)}
    kept_with_all_tex = 0
    for url, body, _ in with_math:
        tex = [" ".join(html_lib.unescape(m).split()) for m in MATHJAX_SPAN.findall(body.decode("utf-8"))]
        text = texts.get(url)
        if text is not None and all(t in text for t in tex):
            kept_with_all_tex += 1
    assert kept_with_all_tex >= 0.95 * len(with_math), f"{kept_with_all_tex} of {len(with_math)}"


@pytest.mark.integration
def test_real_pages_are_all_accounted_for(scipy_and_python_pool):
    config, summary, _, pages = scipy_and_python_pool
    assert summary["balanced"]
    assert list(summary["steps"]) == list(STEPS)
    assert summary["totals"]["in"] == pages  # every response record entered the first step
    assert summary["skipped_non_response_records"] == {"skipped_warcinfo_records": 1}
    assert read_json(f"{config.output_dir}/summary.json") == summary
    assert_files_match_summary(config.output_dir, summary)
    documents = list(iter_documents(config.output_dir))
    assert {d.domain for d in documents} == {"docs.scipy.org", "docs.python.org"}
    sample = documents[0]
    assert sample.language == "en" and sample.quality and sample.token_estimate > 0
    assert sample.warc_file.endswith("debian-docs.warc.gz") and sample.warc_offset > 0 and sample.warc_record_id
    assert sample.normalized_url and sample.content_hash


@pytest.mark.integration
def test_corrupted_warc_finishes_with_every_record_accounted_for(tmp_path):
    real = debian_doc_pages("python3.11-doc", limit=60)
    pages = list(real)
    pages.append(
        (
            "https://bad.example/latin1",
            "<html><body><p>café crème brûlée</p></body></html>".encode("latin-1"),
            "text/html; charset=iso-8859-1",
        )
    )
    pages.append(("https://bad.example/binary-as-html", bytes(range(128, 256)) * 400, "text/html; charset=utf-8"))
    pages.append(
        ("https://bad.example/huge", b"<html><body>" + b"<p>huge page</p>" * 250_000 + b"</body></html>", "text/html")
    )
    pages.insert(5, ("https://bad.example/image", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"))
    pages.append(real[0])  # the last member is cut off below
    warc = tmp_path / "corrupt.warc.gz"
    write_html_warc(str(warc), pages)
    data = bytearray(warc.read_bytes())
    # A corrupt gzip member in the middle, garbage bytes between two members, a response whose
    # HTTP header is broken, and a file cut off inside its last member.
    members = [r.offset for r in iter_warc_records(io.BytesIO(bytes(data)), "x")]  # gzip member starts
    data[members[10] + 40 : members[10] + 80] = b"\x00" * 40
    # Insert from the back so the earlier member offsets stay valid.
    bad_http = _gzip_record(b"http://bad.example/header", b"HTTP/1.1 OK-ish no status\r\nbroken\r\n\r\n<html></html>")
    data = data[: members[30]] + bad_http + data[members[30] :]
    data = data[: members[20]] + b"GARBAGE RECORD\r\n" * 20 + data[members[20] :]
    data = data[: len(data) - 50]
    warc.write_bytes(bytes(data))
    config, summary = prepare(tmp_path / "work", warc, "read.max_record_bytes=1000000")
    assert summary["balanced"]
    assert_files_match_summary(config.output_dir, summary)
    read = summary["steps"]["01_read"]
    assert read["dead_lettered"] == {
        "bad_http_header": 1,
        "corrupt_gzip": 1,
        "not_gzip": 1,
        "record_too_large": 1,
        "truncated_gzip": 1,
        "undecodable": 1,
    }
    assert read["dropped"] == {"not_html": 1}
    letters = [
        json.loads(line) for p in glob.glob(f"{config.output_dir}/dead_letter/01_read/*.jsonl") for line in open(p)
    ]
    assert all(letter["source"].endswith("corrupt.warc.gz") and letter["message"] for letter in letters)
    kept_urls = {d.url for d in iter_documents(config.output_dir)}
    removed_urls = {
        r["url"] for p in glob.glob(f"{config.output_dir}/removed/*/*.parquet") for r in pq.read_table(p).to_pylist()
    }
    assert "https://bad.example/latin1" in kept_urls | removed_urls


def _gzip_record(url: bytes, block: bytes) -> bytes:
    headers = (
        b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: " + url + b"\r\nWARC-Record-ID: <urn:uuid:bad-http>\r\n"
        b"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/http; msgtype=response\r\n"
        b"Content-Length: " + str(len(block)).encode() + b"\r\n\r\n"
    )
    return gzip.compress(headers + block + b"\r\n\r\n")


@pytest.mark.integration
def test_main_command_on_the_embedded_sample(tmp_path):
    result = run_module(
        "beam_pipelines.prepare",
        f"corpus.work_dir={tmp_path}",
        "corpus.sample_max_math_pages=60",
        "corpus.sample_max_other_pages=60",
        f"hydra.run.dir={tmp_path}/hydra",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_json(f"{tmp_path}/pool/summary.json")
    assert summary["outputs"]["documents"] == f"{tmp_path}/pool/documents/*.parquet"
    assert summary["balanced"] and summary["totals"]["kept"] > 60
    domains = {d.domain for d in iter_documents(f"{tmp_path}/pool")}
    assert {"docs.python.org", "mpmath.org", "docs.sympy.org"} <= domains
    # Every math markup form of the sample reached the pool as delimited TeX.
    math_documents = [d for d in iter_documents(f"{tmp_path}/pool") if d.domain != "docs.python.org"]
    assert sum(d.math_spans > 0 for d in math_documents) >= 0.8 * len(math_documents)
