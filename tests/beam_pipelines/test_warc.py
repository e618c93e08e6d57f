"""WARC reading: real files written by warcio, corrupted in the ways crawls corrupt them."""

import gzip
import io

import pytest

from beam_pipelines.accounting import DeadLetter
from beam_pipelines.io.warc import (
    HtmlPage,
    SkippedResponse,
    WarcReadError,
    WarcRecord,
    decode_html,
    iter_warc_records,
    parse_http_response,
    to_html_page,
    write_html_warc,
)

PAGES = [
    (
        f"https://example.org/page/{i}",
        f"<html><body><p>Page number {i} with some text.</p></body></html>".encode(),
        "text/html; charset=utf-8",
    )
    for i in range(20)
]


def warc_bytes(tmp_path, pages=PAGES, gzip_records=True) -> bytes:
    path = tmp_path / ("a.warc.gz" if gzip_records else "a.warc")
    write_html_warc(str(path), pages, gzip=gzip_records)
    return path.read_bytes()


def read(data: bytes, **kwargs):
    items = list(iter_warc_records(io.BytesIO(data), "test.warc.gz", **kwargs))
    records = [i for i in items if isinstance(i, WarcRecord)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    return records, dead


@pytest.mark.parametrize("gzip_records", [True, False])
def test_reads_every_record_with_provenance(tmp_path, gzip_records):
    records, dead = read(warc_bytes(tmp_path, gzip_records=gzip_records))
    assert not dead
    responses = [r for r in records if r.record_type == "response"]
    assert [r.url for r in responses] == [url for url, _, _ in PAGES]
    assert records[0].record_type == "warcinfo"
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    page = to_html_page(responses[3])
    assert isinstance(page, HtmlPage)
    assert "Page number 3" in page.html
    assert page.warc_record_id.startswith("<urn:uuid:")
    assert page.fetch_date == "2024-01-01T00:00:00Z"


def test_stable_record_ids_repeat_when_the_same_pages_are_written_again(tmp_path):
    def response_ids(pages, stable: bool, name: str = "a.warc.gz") -> list[str]:
        path = tmp_path / name
        write_html_warc(str(path), pages, stable_record_ids=stable)
        records, dead = read(path.read_bytes())
        assert not dead
        return [r.record_id for r in records if r.record_type == "response"]

    first = response_ids(PAGES, stable=True)
    assert first == response_ids(PAGES, stable=True) and len(set(first)) == len(PAGES)
    assert all(record_id.startswith("<urn:uuid:") for record_id in first)
    changed = [PAGES[0], (PAGES[1][0], PAGES[1][1] + b" ", PAGES[1][2])]  # same URL, other body
    assert response_ids(changed, stable=True)[1] != first[1]
    assert response_ids(PAGES, stable=False) != response_ids(PAGES, stable=False)  # warcio's random ids


def test_gzip_offsets_point_at_members(tmp_path):
    data = warc_bytes(tmp_path)
    records, _ = read(data)
    for record in records:
        # Each offset starts a gzip member that decompresses to exactly that record.
        member = gzip.GzipFile(fileobj=io.BytesIO(data[record.offset :])).read()
        assert member.startswith(b"WARC/1.")
        assert record.block[:40] in member


def test_whole_file_gzip_stream_is_read(tmp_path):
    plain = warc_bytes(tmp_path, gzip_records=False)
    records, dead = read(gzip.compress(plain))
    assert not dead and len([r for r in records if r.record_type == "response"]) == len(PAGES)


def test_truncated_gzip_keeps_earlier_records_and_dead_letters_the_rest(tmp_path):
    data = warc_bytes(tmp_path)
    records, dead = read(data[: len(data) * 2 // 3])
    assert 5 < len(records) < len(PAGES) + 1
    assert [d.kind for d in dead] == ["truncated_gzip"]
    assert dead[0].offset > records[-1].offset


def test_corrupt_member_and_garbage_between_members_are_skipped(tmp_path):
    data = warc_bytes(tmp_path)
    records, _ = read(data)
    fifth, sixth, ninth = records[5].offset, records[6].offset, records[9].offset
    corrupted = bytearray(data)
    corrupted[fifth + 30 : fifth + 60] = b"\xff" * 30  # inside the deflate stream of record 5
    garbage = b"this is not gzip at all " * 10
    corrupted = bytes(corrupted[:ninth]) + garbage + bytes(corrupted[ninth:])
    records_after, dead = read(corrupted)
    kinds = sorted(d.kind for d in dead)
    assert kinds == ["corrupt_gzip", "not_gzip"]
    assert {d.offset for d in dead} == {fifth, ninth}
    # Everything else is still read: one record lost to corruption, none to the garbage.
    assert len(records_after) == len(records) - 1
    assert sixth in {r.offset for r in records_after}


def test_garbage_in_plain_warc_resyncs_at_next_record(tmp_path):
    data = warc_bytes(tmp_path, gzip_records=False)
    cut = data.index(b"WARC/1.", 2000)
    broken = data[:cut] + b"GARBAGE LINE\r\nmore junk\r\n" + data[cut:]
    records, dead = read(broken)
    assert [d.kind for d in dead] == ["not_a_warc_record"]
    assert len(records) == len(PAGES) + 1


def test_oversized_record_is_dead_lettered_without_holding_it(tmp_path):
    huge = b"<html><body>" + b"x" * (3 * 1024 * 1024) + b"</body></html>"
    pages = PAGES[:3] + [("https://example.org/huge", huge, "text/html")] + PAGES[3:6]
    for gzip_records in (True, False):
        records, dead = read(warc_bytes(tmp_path, pages, gzip_records), max_record_bytes=1024 * 1024)
        assert [d.kind for d in dead] == ["record_too_large"]
        assert len([r for r in records if r.record_type == "response"]) == 6


def http(status_line: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = status_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def record_with(block: bytes) -> WarcRecord:
    return WarcRecord(
        "response", {"warc-target-uri": "http://x.org/a", "warc-record-id": "<urn:uuid:1>"}, block, "f", 0
    )


def test_non_html_and_error_statuses_are_skipped_not_errors():
    png = to_html_page(record_with(http("HTTP/1.1 200 OK", [("Content-Type", "image/png")], b"\x89PNG....")))
    assert isinstance(png, SkippedResponse) and png.reason == "not_html"
    redirect = to_html_page(record_with(http("HTTP/1.1 301 Moved", [("Location", "/b")], b"")))
    assert isinstance(redirect, SkippedResponse) and redirect.reason == "http_status"


def test_bad_http_header_raises_page_error():
    with pytest.raises(WarcReadError) as error:
        parse_http_response(b"NOT HTTP AT ALL\r\n\r\nbody")
    assert error.value.kind == "bad_http_header"
    with pytest.raises(WarcReadError):
        parse_http_response(b"HTTP/1.1 200 OK\r\nno blank line ever")


def test_chunked_and_gzip_content_encoding_are_decoded():
    body = "<html><body>café</body></html>".encode("utf-8")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    page = to_html_page(
        record_with(
            http(
                "HTTP/1.1 200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Transfer-Encoding", "chunked")],
                chunked,
            )
        )
    )
    assert "café" in page.html
    page = to_html_page(
        record_with(
            http("HTTP/1.1 200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], gzip.compress(body))
        )
    )
    assert "café" in page.html


@pytest.mark.parametrize(
    "payload, declared, expected_text, expected_charset",
    [
        ("<p>naïve café</p>".encode("utf-8"), "", "naïve café", "utf-8"),
        ("<p>naïve café</p>".encode("cp1252"), "iso-8859-1", "naïve café", "cp1252"),
        ('<meta charset="shift_jis"><p>数学の問題</p>'.encode("shift_jis"), "", "数学の問題", "shift_jis"),
        ("<p>Привет, математика</p>".encode("cp1251"), "windows-1251", "Привет, математика", "cp1251"),
        # Declared wrongly as UTF-8 but really Latin-1: the next candidate decodes it.
        (("<p>" + "déjà vu " * 20 + "</p>").encode("cp1252"), "utf-8", "déjà vu", "cp1252"),
        (b"\xef\xbb\xbf<p>bom \xc3\xa9</p>", "", "bom é", "utf-8"),
    ],
)
def test_charset_decoding(payload, declared, expected_text, expected_charset):
    text, charset = decode_html(payload, declared)
    assert expected_text in text
    assert charset == expected_charset


def test_undecodable_bytes_raise_page_error():
    garbage = bytes(range(128, 256)) * 50
    with pytest.raises(WarcReadError) as error:
        decode_html(garbage, "utf-8", max_replacement_fraction=0.0)
    assert error.value.kind == "undecodable"
