"""Reading a .warc.gz: our reader (beam_pipelines.io.warc) beside warcio and, when installed, FastWARC.

    python benchmarks/warc_read.py [--packages python-scipy-doc python3.11-doc] [--repeats 5]

Builds one WARC (a gzip member per record, as Common Crawl writes them) from Debian documentation
packages (real HTML; `apt-get download`, cached under .cache/test-data), not timed. Then each side,
interleaved, `--repeats` times, does the same work: every record of the file, its WARC headers
parsed and its whole block (HTTP headers + payload) read into memory. The record counts and block
bytes of all sides are checked equal and printed. Figures are CPU seconds of this process (the
minimum over repeats) and MB/s of compressed input per CPU second.

FastWARC is faster but is not what we read with: it cannot keep the reader's accounting exact. On
the corruptions tests/beam_pipelines/test_warc.py feeds the reader, FastWARC 2.0.1 stops the
whole file with OSError at a corrupt gzip member or a non-WARC line (every later record lost), and
silently drops a truncated last member and records over `max_content_length`: no dead letter
and no offset for any of them. It is not a dependency of ours (resiliparse installs it); its
column is left out where it is missing.

Cost: each side reads the file once per repeat, linear in its size; memory is one record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from warcio.archiveiterator import ArchiveIterator as WarcioIterator  # noqa: E402

from beam_pipelines.accounting import DeadLetter  # noqa: E402
from beam_pipelines.io.warc import iter_warc_records, write_html_warc  # noqa: E402
from tests.support import debian_doc_pages  # noqa: E402


def read_ours(path: str) -> tuple[int, int]:
    records = block_bytes = 0
    with open(path, "rb") as stream:
        for item in iter_warc_records(stream, path):
            if isinstance(item, DeadLetter):
                raise RuntimeError(f"our reader dead-lettered a record of the benchmark file: {item.message}")
            records += 1
            block_bytes += len(item.block)
    return records, block_bytes


def read_warcio(path: str) -> tuple[int, int]:
    records = block_bytes = 0
    with open(path, "rb") as stream:
        # no_record_parse: the HTTP headers stay in the block, as in our reader's records.
        for record in WarcioIterator(stream, no_record_parse=True):
            records += 1
            block_bytes += len(record.raw_stream.read())
    return records, block_bytes


def read_fastwarc(path: str) -> tuple[int, int]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType  # noqa: PLC0415  optional peer, not a dependency

    records = block_bytes = 0
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=False):
            records += 1
            block_bytes += len(record.reader.read())
    return records, block_bytes


def fastwarc_installed() -> bool:
    try:
        import fastwarc  # noqa: F401, PLC0415  optional peer: only whether it imports
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", nargs="+", default=["python-scipy-doc", "python3.11-doc"])
    parser.add_argument("--limit", type=int, default=None, help="pages per package")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the minimum CPU time is reported")
    args = parser.parse_args()
    sides = {"ours": read_ours, "warcio": read_warcio}
    if fastwarc_installed():
        sides["fastwarc"] = read_fastwarc
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "bench.warc.gz")
        write_html_warc(path, [p for package in args.packages for p in debian_doc_pages(package, args.limit)])
        megabytes = os.path.getsize(path) / 1e6
        work, seconds = {}, {name: [] for name in sides}
        for name, read in sides.items():  # warm-up: imports, page cache
            work[name] = read(path)
        for _ in range(args.repeats):
            for name, read in sides.items():
                started = time.process_time()
                if read(path) != work[name]:
                    raise RuntimeError(f"{name} read different records on a repeat")
                seconds[name].append(time.process_time() - started)
    if len(set(work.values())) != 1:
        raise RuntimeError(f"the sides did different work: {work}")
    records, block_bytes = work["ours"]
    figures = {
        "benchmark": "warc_read",
        "warc_mb": round(megabytes, 1),
        "records": records,
        "block_mb": round(block_bytes / 1e6, 1),
        "same_work_checked": True,
        "repeats": args.repeats,
        "cpu_seconds": {name: round(min(values), 3) for name, values in seconds.items()},
        "mb_per_cpu_second": {name: round(megabytes / min(values), 1) for name, values in seconds.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for name in sides:
        if name != "ours":
            figures[f"ours_over_{name}_cpu"] = round(min(seconds["ours"]) / min(seconds[name]), 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
