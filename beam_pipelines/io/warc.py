"""Read WARC files into HTML pages, with every unreadable part dead-lettered, never lost.

Pure core: `iter_warc_records(stream, source)` yields `WarcRecord`s and `DeadLetter`s from a
binary stream (gzip per record as Common Crawl writes it, one gzip stream, or plain WARC);
`to_html_page(record)` parses the HTTP response and decodes the HTML. Beam wrapper:
`ReadWarcPages` matches files through Beam's FileSystems (local, gs://, s3://, hdfs://), reads
each file on one worker as a stream and reshuffles the pages so extraction spreads out.

Robustness rules (each has a test):
- a corrupt or truncated gzip member, bytes that are not a WARC record, an oversized record, a
  broken HTTP header or undecodable text each become one dead letter with the file offset, and
  reading resumes at the next record where that is possible;
- memory is bounded by `max_record_bytes` (a 100 MB page is skipped while streaming, not held);
- a file is read start to end on one worker: cost is linear in its size, memory is one record.
"""

from __future__ import annotations

import codecs
import io
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from resiliparse.parse.encoding import detect_encoding
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from beam_pipelines.accounting import DeadLetter, StepCounters, bytes_preview

READ_STEP = "01_read"
GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 20
HTML_CONTENT_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(slots=True)
class WarcRecord:
    record_type: str  # response, request, metadata, warcinfo, ...
    headers: dict[str, str]  # WARC headers, names lower-cased
    block: bytes  # the record body: for a response, HTTP headers + payload
    source: str
    offset: int  # byte offset of the record (of its gzip member for .warc.gz) in the file

    @property
    def url(self) -> str:
        return self.headers.get("warc-target-uri", "").strip("<>")

    @property
    def record_id(self) -> str:
        return self.headers.get("warc-record-id", "")

    @property
    def date(self) -> str:
        return self.headers.get("warc-date", "")


@dataclass(slots=True)
class HtmlPage:
    """A decoded HTML response, ready for extraction."""

    url: str
    html: str
    charset: str
    content_type: str
    status: int
    warc_file: str
    warc_offset: int
    warc_record_id: str
    fetch_date: str


@dataclass(slots=True)
class SkippedResponse:
    """A readable response that is not an HTML page (image, PDF, redirect...): a drop, not an error."""

    reason: str  # not_html | http_status
    url: str
    content_type: str
    status: int
    warc_file: str
    warc_offset: int
    warc_record_id: str
    fetch_date: str


class WarcReadError(ValueError):
    """A part of a WARC file that cannot be read: bytes that do not form a WARC record, or a
    response that is not a readable HTML page. `kind` names the dead-letter class. `position`
    (framing errors only) is where the reader stands in the stream when it gives up the record:
    reading goes on from there."""

    def __init__(self, kind: str, message: str, position: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.position = position


# ----------------------------------------------------------------------------------------------
# WARC record framing


def iter_warc_records(
    stream: BinaryIO, source: str, max_record_bytes: int = 10 << 20
) -> Iterator[WarcRecord | DeadLetter]:
    """Every record of a WARC stream, or a dead letter for every part that cannot be read."""
    head = stream.read(3)
    stream = _Prefixed(head, stream)
    if head.startswith(GZIP_MAGIC[:2]):
        yield from _iter_gzip_members(stream, source, max_record_bytes)
    else:
        yield from _iter_plain_records(stream, source, 0, max_record_bytes)


def _iter_plain_records(
    stream: BinaryIO, source: str, base_offset: int, max_record_bytes: int, member_offset: int = -1
) -> Iterator[WarcRecord | DeadLetter]:
    """Records of an uncompressed WARC stream. `member_offset` >= 0 when the stream is one gzip
    member: offsets then name the member, as Common Crawl's index does."""
    reader = stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream)
    position = 0
    while True:
        start = position
        try:
            record, position = _read_one_record(reader, position, max_record_bytes)
        except WarcReadError as error:
            offset = member_offset if member_offset >= 0 else base_offset + start
            yield DeadLetter(READ_STEP, error.kind, str(error), source=source, offset=offset)
            if error.kind == "record_too_large":  # read past in full: the next record starts here
                position = error.position
                continue
            skipped, position = _skip_to_next_record(reader, error.position)
            if skipped is None:
                return
            continue
        if record is None:
            return
        headers, block = record
        offset = member_offset if member_offset >= 0 else base_offset + start
        yield WarcRecord(
            record_type=headers.get("warc-type", "").lower(),
            headers=headers,
            block=block,
            source=source,
            offset=offset,
        )


def _read_one_record(
    reader: BinaryIO, position: int, max_record_bytes: int
) -> tuple[tuple[dict[str, str], bytes] | None, int]:
    line = reader.readline()
    position += len(line)
    while line in (b"\r\n", b"\n"):
        line = reader.readline()
        position += len(line)
    if not line:
        return None, position
    if not line.startswith(b"WARC/"):
        raise WarcReadError(
            "not_a_warc_record", f"expected 'WARC/' at a record start, found {bytes_preview(line, 40)!r}", position
        )
    headers: dict[str, str] = {}
    last_name = None
    while True:
        line = reader.readline()
        position += len(line)
        if not line:
            raise WarcReadError("truncated_record", "file ends inside the WARC headers", position)
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and last_name:
            headers[last_name] += " " + line.strip().decode("utf-8", "replace")
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise WarcReadError(
                "bad_warc_header", f"WARC header line without ':': {bytes_preview(line, 80)!r}", position
            )
        last_name = name.strip().decode("ascii", "replace").lower()
        headers[last_name] = value.strip().decode("utf-8", "replace")
    try:
        length = int(headers.get("content-length", ""))
        if length < 0:
            raise ValueError
    except ValueError:
        raise WarcReadError(
            "bad_warc_header", f"bad Content-Length {headers.get('content-length')!r}", position
        ) from None
    if length > max_record_bytes:
        _discard(reader, length)
        raise WarcReadError(
            "record_too_large",
            f"record of {length} bytes exceeds max_record_bytes={max_record_bytes} "
            f"({headers.get('warc-target-uri', '')})",
            position + length,
        )
    block = reader.read(length)
    position += len(block)
    if len(block) < length:
        raise WarcReadError("truncated_record", f"record declares {length} bytes, file has {len(block)}", position)
    return (headers, block), position


def _discard(reader: BinaryIO, length: int) -> None:
    remaining = length
    while remaining > 0:
        chunk = reader.read(min(remaining, _CHUNK))
        if not chunk:
            return
        remaining -= len(chunk)


def _skip_to_next_record(reader: BinaryIO, position: int) -> tuple[int | None, int]:
    """Advance line by line to the next line starting with 'WARC/1.'; returns the bytes skipped
    (None at end of file) and the new position, leaving that line unread."""
    skipped = 0
    while True:
        peek = reader.peek(8)[:8] if hasattr(reader, "peek") else b""
        if not peek:
            return None, position
        if peek.startswith(b"WARC/1."):
            return skipped, position
        line = reader.readline()
        if not line:
            return None, position
        position += len(line)
        skipped += len(line)


def _iter_gzip_members(stream: BinaryIO, source: str, max_record_bytes: int) -> Iterator[WarcRecord | DeadLetter]:
    """Decompress member by member so a corrupt member costs only itself."""
    buffer = bytearray()
    buffer_start = 0  # absolute file offset of buffer[0]
    at_eof = False

    def fill() -> bool:
        nonlocal at_eof
        if at_eof:
            return False
        chunk = stream.read(_CHUNK)
        if not chunk:
            at_eof = True
            return False
        buffer.extend(chunk)
        return True

    member_start = 0  # absolute offset
    failed_region: tuple[int, str, str] | None = None  # (offset, kind, message) being resynced
    while True:
        index = member_start - buffer_start
        if index > 4 * _CHUNK:  # compact now and then, not per member (a memmove each time)
            del buffer[:index]
            buffer_start = member_start
            index = 0
        while len(buffer) - index < 3 and fill():
            pass
        if len(buffer) - index <= 0:
            break
        if buffer[index : index + 3] != GZIP_MAGIC:
            if failed_region is None:
                failed_region = (member_start, "not_gzip", "bytes between gzip members that are not a gzip member")
            found = _find_magic(buffer, index + 1, fill)
            if found is None:
                break
            member_start = buffer_start + found
            continue
        member = _decompress_member(buffer, index, fill, max_record_bytes)
        if member.error_kind is None:
            if failed_region is not None:
                yield _region_dead_letter(failed_region, source)
                failed_region = None
            if member.too_large:
                yield DeadLetter(
                    READ_STEP,
                    "record_too_large",
                    f"gzip member decompresses to more than max_record_bytes={max_record_bytes}",
                    source=source,
                    offset=member_start,
                )
            else:
                yield from _iter_plain_records(
                    io.BytesIO(member.data), source, member_start, max_record_bytes, member_offset=member_start
                )
            member_start += member.compressed_length
            continue
        if member.error_kind == "truncated_gzip":
            if failed_region is not None:
                yield _region_dead_letter(failed_region, source)
            yield DeadLetter(READ_STEP, "truncated_gzip", member.error_message, source=source, offset=member_start)
            failed_region = None
            break
        # A corrupt member: skip to the next gzip header and keep reading; consecutive failures
        # (a false header inside garbage) fold into one dead letter for the whole region.
        if failed_region is None:
            failed_region = (member_start, member.error_kind, member.error_message)
        found = _find_magic(buffer, index + 1, fill)
        if found is None:
            break
        member_start = buffer_start + found
    if failed_region is not None:
        yield _region_dead_letter(failed_region, source)


def _region_dead_letter(region: tuple[int, str, str], source: str) -> DeadLetter:
    offset, kind, message = region
    return DeadLetter(READ_STEP, kind, message, source=source, offset=offset)


def _find_magic(buffer: bytearray, start: int, fill) -> int | None:
    """Index in `buffer` of the next gzip header at or after `start`, reading more as needed."""
    position = start
    while True:
        found = buffer.find(GZIP_MAGIC, position)
        if found >= 0:
            return found
        position = max(start, len(buffer) - 2)
        if not fill():
            return None


@dataclass(slots=True)
class _Member:
    data: bytes = b""
    compressed_length: int = 0
    too_large: bool = False
    error_kind: str | None = None
    error_message: str = ""


def _decompress_member(buffer: bytearray, index: int, fill, max_record_bytes: int) -> _Member:
    """Decompress the gzip member starting at buffer[index]; output is capped per call, so a
    gzip bomb or a 100 MB page streams through without being held."""
    decompressor = zlib.decompressobj(31)
    pieces: list[bytes] = []
    produced = 0
    too_large = False
    position = index
    while not decompressor.eof:
        if decompressor.unconsumed_tail:
            data = decompressor.unconsumed_tail
        else:
            if position >= len(buffer) and not fill():
                return _Member(
                    error_kind="truncated_gzip",
                    error_message=f"gzip member cut off after {produced} decompressed bytes",
                )
            data = bytes(buffer[position : position + 65536])
            position += len(data)
        try:
            out = decompressor.decompress(data, _CHUNK)
        except zlib.error as error:
            return _Member(error_kind="corrupt_gzip", error_message=f"zlib: {error}")
        produced += len(out)
        if produced > max_record_bytes + 65536:
            too_large = True
            pieces.clear()
        elif not too_large:
            pieces.append(out)
    position -= len(decompressor.unused_data)
    return _Member(data=b"".join(pieces), compressed_length=position - index, too_large=too_large)


class _Prefixed(io.RawIOBase):
    """A stream with a few already-read bytes put back in front."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        if self._prefix:
            n = min(len(target), len(self._prefix))
            target[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(target))
        n = len(data)
        target[:n] = data
        return n


# ----------------------------------------------------------------------------------------------
# HTTP response -> decoded HTML


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
# WHATWG: these labels mean windows-1252 in browsers, and real pages rely on it.
_WINDOWS_1252_ALIASES = {"iso-8859-1", "latin-1", "latin1", "ascii", "us-ascii", "iso8859-1"}


def parse_http_response(block: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and payload of an HTTP response block."""
    end = block.find(b"\r\n\r\n")
    separator = 4
    if end < 0:
        end = block.find(b"\n\n")
        separator = 2
    if end < 0:
        raise WarcReadError("bad_http_header", "no blank line after the HTTP headers")
    head = block[:end].decode("latin-1")
    lines = head.replace("\r\n", "\n").split("\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise WarcReadError("bad_http_header", f"bad HTTP status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise WarcReadError("bad_http_header", f"HTTP header line without ':': {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    payload = block[end + separator :]
    return int(status_line[1]), headers, payload


def _content_type_and_charset(value: str) -> tuple[str, str]:
    parts = [p.strip() for p in value.split(";")]
    mime = parts[0].lower()
    charset = ""
    for part in parts[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'").lower()
    return mime, charset


def _dechunk(payload: bytes) -> bytes:
    out = bytearray()
    position = 0
    while True:
        line_end = payload.find(b"\r\n", position)
        if line_end < 0:
            raise WarcReadError("bad_chunked_encoding", "chunk size line missing")
        size_text = payload[position:line_end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise WarcReadError("bad_chunked_encoding", f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            return bytes(out)
        start = line_end + 2
        out += payload[start : start + size]
        position = start + size + 2


def _decode_content_encoding(payload: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.lower().strip()
    if encoding in ("", "identity"):
        return payload
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if encoding != "deflate" else 15  # 47: gzip or zlib header, auto-detected
        try:
            decompressor = zlib.decompressobj(wbits)
            out = decompressor.decompress(payload, limit + 1)
        except zlib.error as error:
            raise WarcReadError("bad_content_encoding", f"{encoding}: {error}") from None
        if len(out) > limit:
            raise WarcReadError("record_too_large", f"{encoding} payload decompresses past {limit} bytes")
        return out
    raise WarcReadError("unsupported_content_encoding", f"Content-Encoding {encoding!r} is not supported")


def _known_codec(label: str) -> str | None:
    if not label:
        return None
    label = label.lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_html(payload: bytes, declared_charset: str = "", max_replacement_fraction: float = 0.01) -> tuple[str, str]:
    """Decode HTML bytes: BOM, then the HTTP charset, then `<meta charset>`, then UTF-8, then a
    detector. The first candidate that decodes strictly wins; otherwise the best candidate is
    accepted with replacement characters if they are rare, and the page is undecodable if not."""
    if payload.startswith(codecs.BOM_UTF8):
        return payload[3:].decode("utf-8", "replace"), "utf-8"
    if payload.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return payload.decode("utf-16", "replace"), "utf-16"
    candidates: list[str] = []
    for label in (declared_charset, _meta_charset(payload), "utf-8", _detected_charset(payload)):
        codec = _known_codec(label)
        if codec and codec not in candidates:
            candidates.append(codec)
    for codec in candidates:
        try:
            return payload.decode(codec), codec
        except (UnicodeDecodeError, LookupError):
            continue
    codec = candidates[0] if candidates else "utf-8"
    text = payload.decode(codec, "replace")
    bad = text.count("\ufffd")
    if bad <= max_replacement_fraction * max(1, len(text)):
        return text, codec
    raise WarcReadError(
        "undecodable", f"{bad} of {len(text)} characters undecodable as {codec} (tried {', '.join(candidates)})"
    )


def _meta_charset(payload: bytes) -> str:
    match = _META_CHARSET.search(payload[:4096])
    return match.group(1).decode("ascii", "replace") if match else ""


def _detected_charset(payload: bytes) -> str:
    return detect_encoding(payload[:65536]) or ""


def to_html_page(
    record: WarcRecord, max_record_bytes: int = 10 << 20, max_replacement_fraction: float = 0.01
) -> HtmlPage | SkippedResponse:
    """The decoded HTML page of a response record, or why it is not one. Raises WarcReadError for
    a response that cannot be read (it becomes a dead letter)."""
    status, headers, payload = parse_http_response(record.block)
    mime, charset = _content_type_and_charset(headers.get("content-type", ""))
    skipped = dict(
        url=record.url,
        content_type=mime,
        status=status,
        warc_file=record.source,
        warc_offset=record.offset,
        warc_record_id=record.record_id,
        fetch_date=record.date,
    )
    if not 200 <= status < 300:
        return SkippedResponse(reason="http_status", **skipped)
    if mime not in HTML_CONTENT_TYPES and not (
        not mime and payload.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))
    ):
        return SkippedResponse(reason="not_html", **skipped)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        payload = _dechunk(payload)
    payload = _decode_content_encoding(payload, headers.get("content-encoding", ""), max_record_bytes)
    html, used_charset = decode_html(payload, charset, max_replacement_fraction)
    return HtmlPage(
        url=record.url,
        html=html,
        charset=used_charset,
        content_type=mime or "text/html",
        status=status,
        warc_file=record.source,
        warc_offset=record.offset,
        warc_record_id=record.record_id,
        fetch_date=record.date,
    )


# ----------------------------------------------------------------------------------------------
# Beam


class ReadWarcFileDoFn(beam.DoFn):
    """One readable file (from `fileio.ReadMatches`) -> HtmlPage main output; skipped responses
    and dead letters on tagged outputs; counters under step `01_read`."""

    SKIPPED = "skipped"

    def __init__(self, max_record_bytes: int, max_replacement_fraction: float):
        self.max_record_bytes = max_record_bytes
        self.max_replacement_fraction = max_replacement_fraction

    def setup(self):
        self.counters = StepCounters(READ_STEP)

    def process(self, readable_file):
        path = readable_file.metadata.path
        counters = self.counters
        try:
            stream = readable_file.open(compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED)
        except Exception as error:  # unreadable file: one dead letter for the file
            counters.count_in()
            counters.count_dead_letter("unreadable_file")
            yield beam.pvalue.TaggedOutput(
                "dead_letter",
                DeadLetter(READ_STEP, "unreadable_file", f"{type(error).__name__}: {error}", source=path).to_json(),
            )
            return
        with stream:
            for item in iter_warc_records(stream, path, self.max_record_bytes):
                if isinstance(item, DeadLetter):
                    counters.count_in()
                    counters.count_dead_letter(item.kind)
                    yield beam.pvalue.TaggedOutput("dead_letter", item.to_json())
                    continue
                if item.record_type != "response":
                    counters.count(f"skipped_{item.record_type or 'untyped'}_records")
                    continue
                counters.count_in()
                try:
                    page = to_html_page(item, self.max_record_bytes, self.max_replacement_fraction)
                except WarcReadError as error:
                    counters.count_dead_letter(error.kind)
                    yield beam.pvalue.TaggedOutput(
                        "dead_letter",
                        DeadLetter(
                            READ_STEP,
                            error.kind,
                            str(error),
                            source=path,
                            offset=item.offset,
                            record_id=item.record_id,
                            url=item.url,
                            preview=bytes_preview(item.block),
                        ).to_json(),
                    )
                    continue
                if isinstance(page, SkippedResponse):
                    counters.count_dropped(page.reason)
                    yield beam.pvalue.TaggedOutput(self.SKIPPED, page)
                    continue
                counters.count_kept()
                yield page


class ReadWarcPages(beam.PTransform):
    """WARC file patterns -> PCollection[HtmlPage], with `.skipped` and `.dead_letters`.

    Returns a dict-like `beam.pvalue.DoOutputsTuple` with tags `pages`, `skipped`, `dead_letter`.
    """

    def __init__(
        self, patterns: Iterable[str], max_record_bytes: int = 10 << 20, max_replacement_fraction: float = 0.01
    ):
        super().__init__()
        self.patterns = list(patterns)
        self.max_record_bytes = max_record_bytes
        self.max_replacement_fraction = max_replacement_fraction

    def expand(self, pipeline):
        outputs = (
            pipeline
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            # One file per element: spread files over workers before the (long) read of each.
            | "Spread files" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches()
            | "Read records"
            >> beam.ParDo(ReadWarcFileDoFn(self.max_record_bytes, self.max_replacement_fraction)).with_outputs(
                ReadWarcFileDoFn.SKIPPED, "dead_letter", main="pages"
            )
        )
        return outputs


def match_inputs(patterns: Iterable[str]) -> list[str]:
    """Expand input patterns through Beam FileSystems; raise one clear error when any pattern
    matches nothing (a typo must not become an empty corpus)."""
    files: list[str] = []
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:
            raise FileNotFoundError(f"input {pattern!r} cannot be listed: {error}") from None
        if not matched:
            raise FileNotFoundError(f"input {pattern!r} matches no file")
        files.extend(m.path for m in matched)
    return sorted(set(files))


# ----------------------------------------------------------------------------------------------
# Writing (sample corpus, tests, benchmarks): real WARC records through warcio


def write_html_warc(
    path: str, pages: Iterable[tuple[str, bytes, str]], gzip: bool = True, date: str = "2024-01-01T00:00:00Z"
) -> int:
    """Write (url, html bytes, content type header) pages as request-less response records.

    Returns the number of records written. Uses warcio, so the files are what real tools make.
    """
    count = 0
    with open(path, "wb") as output:
        writer = WARCWriter(output, gzip=gzip)
        writer.write_record(writer.create_warcinfo_record(path.rsplit("/", 1)[-1], {"software": "deepseekmath-stack"}))
        for url, body, content_type in pages:
            http_headers = StatusAndHeaders(
                "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))], protocol="HTTP/1.1"
            )
            record = writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                length=len(body),
                http_headers=http_headers,
                warc_headers_dict={"WARC-Date": date},
            )
            writer.write_record(record)
            count += 1
    return count
