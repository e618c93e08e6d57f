"""A real document pool for the recall tests, built once per test session (and cached on disk).

Four Debian documentation packages, each served from its own site in one WARC file, go through
the real `prepare` pipeline: python-scipy-doc and python-mpmath-doc are the math sites,
python3.11-doc and git-doc the others. The pool is cached under the test-data cache, keyed by a
hash of the code that makes it, so a second session (or a recall-only change) skips the build.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.io.parquet import iter_documents
from beam_pipelines.io.warc import write_html_warc
from beam_pipelines.recall.domains import hash_unit
from beam_pipelines.stages.prepare import run_prepare
from stack_common.cli import compose_config
from tests.support import CACHE_DIR, REPO_ROOT, debian_doc_pages

MATH_PACKAGES = ("python-scipy-doc", "python-mpmath-doc")
OTHER_PACKAGES = ("python3.11-doc", "git-doc")
MATH_DOMAINS = {"docs.scipy.org", "mpmath.org"}
OTHER_DOMAINS = {"docs.python.org", "git-scm.com"}
SEED_PAGES = 100


@dataclass(frozen=True)
class DebianPool:
    pool_dir: str  # a prepare stage directory (documents/ + summary.json)
    seed_file: str  # JSONL seed positives: a small subset of python-scipy-doc pages
    math_ids: frozenset  # pool documents from the math packages (labels come from the package)
    all_ids: frozenset
    math_tokens: int
    pool_tokens: int
    math_domains: frozenset = frozenset(MATH_DOMAINS)
    other_domains: frozenset = frozenset(OTHER_DOMAINS)


def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    sources = (
        sorted((REPO_ROOT / "beam_pipelines").glob("*.py"))
        + sorted((REPO_ROOT / "beam_pipelines" / "io").glob("*.py"))
        + sorted((REPO_ROOT / "beam_pipelines" / "transforms").glob("*.py"))
    )
    for path in sources:
        if path.name not in ("classify.py", "recall.py"):
            digest.update(path.name.encode() + path.read_bytes())
    digest.update((REPO_ROOT / "tests" / "support.py").read_bytes())
    return digest.hexdigest()[:16]


def _build_pool(target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pages = [page for package in MATH_PACKAGES + OTHER_PACKAGES for page in debian_doc_pages(package)]
    write_html_warc(str(staging / "debian-docs.warc.gz"), pages)
    config = compose_config(
        "prepare",
        [
            "beam=direct",  # all cores: extraction is the heavy part
            f"corpus.warc_inputs=[{staging / 'debian-docs.warc.gz'}]",
            f"corpus.work_dir={staging}",
        ],
        register_configs,
    )
    run_prepare(config)
    (staging / "debian-docs.warc.gz").unlink()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


@pytest.fixture(scope="session")
def debian_pool() -> DebianPool:
    try:
        for package in MATH_PACKAGES + OTHER_PACKAGES:
            debian_doc_pages(package, limit=1)
    except RuntimeError as error:  # apt cannot provide the packages on this machine
        pytest.skip(str(error))
    root = CACHE_DIR / "recall-pool" / _code_fingerprint()
    if not (root / "pool" / "summary.json").exists():
        _build_pool(root)
    pool_dir = root / "pool"
    documents = list(iter_documents(str(pool_dir), columns=["id", "url", "domain", "title", "text", "token_estimate"]))
    math_ids = frozenset(d.id for d in documents if d.domain in MATH_DOMAINS)
    assert {d.domain for d in documents} == MATH_DOMAINS | OTHER_DOMAINS
    # Seeds: a small, hash-chosen subset of the scipy documentation (text + url, OpenWebMath-style).
    scipy = sorted((d for d in documents if d.domain == "docs.scipy.org"), key=lambda d: hash_unit(d.id, "seed-test"))
    seed_file = root / "seed_positives.jsonl"
    with open(seed_file, "w", encoding="utf-8") as output:
        for document in scipy[:SEED_PAGES]:
            output.write(json.dumps({"url": document.url, "title": document.title, "text": document.text}) + "\n")
    return DebianPool(
        pool_dir=str(pool_dir),
        seed_file=str(seed_file),
        math_ids=math_ids,
        all_ids=frozenset(d.id for d in documents),
        math_tokens=sum(d.token_estimate for d in documents if d.id in math_ids),
        pool_tokens=sum(d.token_estimate for d in documents),
    )
