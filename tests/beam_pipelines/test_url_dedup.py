"""URL normalisation, and URL/exact dedup as real Beam graphs (TestPipeline on FnApiRunner)."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.document import Document
from beam_pipelines.transforms.exact_dedup import ExactDedup, content_hash
from beam_pipelines.transforms.url_dedup import UrlDedup, normalize_url


@pytest.mark.parametrize(
    "a, b",
    [
        ("HTTP://WWW.Example.COM:80/a/b/", "http://example.com/a/b"),
        ("https://example.com/a?b=2&a=1#frag", "http://example.com/a?a=1&b=2"),
        ("https://example.com/a?utm_source=x&id=3&fbclid=y", "https://example.com/a?id=3"),
        ("https://example.com/a;jsessionid=ABC123/b", "https://example.com/a/b"),
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        ("https://example.com/%7Euser/caf%C3%A9", "https://example.com/~user/café"),
        ("https://example.com:443/", "https://example.com"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
    ],
)
def test_same_page_same_key(a, b):
    assert normalize_url(a) == normalize_url(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("https://example.com/a", "https://example.com/b"),
        ("https://example.com/a?id=1", "https://example.com/a?id=2"),
        ("https://example.com:8080/a", "https://example.com/a"),
        ("https://a.example.com/x", "https://b.example.com/x"),
    ],
)
def test_different_pages_different_keys(a, b):
    assert normalize_url(a) != normalize_url(b)


def test_unparseable_url_is_kept_as_is():
    assert normalize_url("http://[::1") == "http://[::1"


def doc(doc_id, url, text, date):
    return Document(id=doc_id, url=url, text=text, fetch_date=date)


def test_url_dedup_keeps_latest_fetch_and_records_losers():
    documents = [
        doc("a1", "https://www.example.com/p?utm_source=x", "old text", "2023-01-01"),
        doc("a2", "http://example.com/p", "newer text", "2024-01-01"),
        doc("a3", "https://example.com/p/", "newest text", "2024-06-01"),
        doc("b1", "https://example.com/q", "other page", "2023-01-01"),
    ]
    with TestPipeline(runner="FnApiRunner") as pipeline:
        result = pipeline | beam.Create(documents) | UrlDedup()
        assert_that(result.kept | "kept ids" >> beam.Map(lambda d: d.id), equal_to(["a3", "b1"]), label="kept")
        assert_that(
            result.removed | "removed" >> beam.Map(lambda r: (r["id"], r["removed_reason"], r["removed_detail"])),
            equal_to([("a1", "duplicate_url", "a3"), ("a2", "duplicate_url", "a3")]),
            label="removed",
        )


def test_exact_dedup_keeps_the_earliest_copy_regardless_of_layout():
    documents = [
        doc("m2", "https://mirror.net/x", "The  Same\n\nText here.", "2024-01-01"),
        doc("o1", "https://origin.org/x", "the same text HERE.", "2022-01-01"),
        doc("z9", "https://other.org/y", "different text", "2021-01-01"),
    ]
    assert content_hash(documents[0].text) == content_hash(documents[1].text)
    with TestPipeline(runner="FnApiRunner") as pipeline:
        result = pipeline | beam.Create(documents) | ExactDedup()
        assert_that(result.kept | "kept ids" >> beam.Map(lambda d: d.id), equal_to(["o1", "z9"]), label="kept")
        assert_that(
            result.removed | "removed" >> beam.Map(lambda r: (r["id"], r["removed_detail"])),
            equal_to([("m2", "o1")]),
            label="removed",
        )
