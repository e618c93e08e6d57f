"""URL normalisation and URL deduplication (one page per normalised URL).

Crawls fetch the same page under many spellings (`HTTP://WWW.Example.com:80/a/?b=2&a=1#top`,
tracking parameters, session ids) and fetch it again in later crawls. `normalize_url` maps the
spellings to one key; `UrlDedup` keeps one document per key.

Survivor rule (deterministic on every runner): the latest fetch, then the longest text, then the
smallest id. Losers go to `removed/05_url_dedup/` with the survivor's id.
Scale: one GroupByKey on the normalised URL; a group is read twice (best, then losers) and never
held in memory, so a URL fetched a million times costs no more memory than one fetched once.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import apache_beam as beam

from beam_pipelines.accounting import REMOVED, StepCounters
from beam_pipelines.document import Document, removed_row

URL_DEDUP_STEP = "05_url_dedup"

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Parameters that never change the page's content.
_TRACKING_PARAMETER = re.compile(
    r"^(utm_[a-z_]+|gclid|fbclid|dclid|msclkid|yclid|mc_cid|mc_eid|_ga|_gl|ref_src|igshid|"
    r"sessionid|session_id|sid|phpsessid|jsessionid|aspsessionid|cfid|cftoken)$",
    re.I,
)
_UNRESERVED = "-._~"


def normalize_url(url: str) -> str:
    """A canonical spelling of `url` for deduplication (not for fetching).

    Lower-cases scheme and host, drops `www.`, default ports, fragments, tracking and session
    parameters, `;jsessionid=` path parameters and a trailing slash; sorts query parameters;
    decodes percent-escapes of unreserved characters and re-encodes the rest uniformly; resolves
    `.` and `..` path segments. Unparseable input is returned stripped, so it still dedups exactly.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower() or "http"
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:
        return url
    try:
        host = host.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        pass
    if host.startswith("www."):
        host = host[4:]
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    path = re.sub(r";(jsessionid|phpsessid|sid)=[^/?#]*", "", parts.path, flags=re.I)
    path = _normalize_path(path)
    query_items = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not _TRACKING_PARAMETER.match(key)
    ]
    query = urlencode(sorted(query_items), doseq=True)
    # https and http serve the same page on nearly every site that has both.
    return urlunsplit(("http" if scheme in ("http", "https") else scheme, netloc, path, query, ""))


def _normalize_path(path: str) -> str:
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in (".", ""):
            segments.append(quote(unquote(segment), safe=_UNRESERVED + "!$&'()*+,;=:@%"))
    normalized = "/" + "/".join(segments)
    return "" if normalized == "/" else normalized


def _url_rank(document: Document) -> tuple:
    # Higher is better; the id (reversed order) breaks ties so the result never depends on order.
    return (document.fetch_date, len(document.text), ReverseOrder(document.id))


class ReverseOrder:
    """Wraps a value so that sorting (and max) prefers the smaller one."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __lt__(self, other: "ReverseOrder") -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReverseOrder) and self.value == other.value


class KeepBestPerKey(beam.DoFn):
    """(key, documents) -> the best document (main) and removed rows for the rest (`REMOVED`)."""

    def __init__(self, step: str, reason: str, rank):
        self.step = step
        self.reason = reason
        self.rank = rank

    def setup(self):
        self.counters = StepCounters(self.step)

    def process(self, keyed):
        _, documents = keyed
        best = None
        best_rank = None
        count = 0
        for document in documents:  # first pass: find the survivor, holding one document
            count += 1
            rank = self.rank(document)
            if best is None or best_rank < rank:
                best, best_rank = document, rank
        self.counters.count_in(count)
        self.counters.count_kept()
        yield best
        if count == 1:
            return
        survivor_skipped = False
        for document in documents:  # second pass: everything else is a duplicate of the survivor
            if not survivor_skipped and document.id == best.id:
                survivor_skipped = True
                continue
            self.counters.count_dropped(self.reason)
            yield beam.pvalue.TaggedOutput(REMOVED, removed_row(document, self.step, self.reason, best.id))


class UrlDedup(beam.PTransform):
    """Documents -> one document per normalised URL; `.removed` holds the duplicates' rows."""

    def expand(self, documents):
        return (
            documents
            | "Normalise URL" >> beam.Map(_with_normalized_url)
            | "Key by URL" >> beam.Map(lambda d: (d.normalized_url, d))
            | "Group by URL" >> beam.GroupByKey()
            | "Keep latest"
            >> beam.ParDo(KeepBestPerKey(URL_DEDUP_STEP, "duplicate_url", _url_rank)).with_outputs(REMOVED, main="kept")
        )


def _with_normalized_url(document: Document) -> Document:
    document.normalized_url = normalize_url(document.url)
    return document
