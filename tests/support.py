"""Shared test helpers: real data on this machine, and environments for real subprocesses."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("DEEPSEEKMATH_TEST_CACHE", REPO_ROOT / ".cache" / "test-data"))

# Debian documentation packages used as real HTML (`apt-get download`, `dpkg-deb -x`): two math sites
# (scipy: 4,304 MathJax pages; mpmath: 36) and two that are not (Python 3.11: 530 pages; git: 241).
DEBIAN_DOCS = {
    "python-scipy-doc": ("usr/share/doc/python-scipy-doc/html", "https://docs.scipy.org/doc/scipy/"),
    "python-mpmath-doc": ("usr/share/doc/python-mpmath-doc/html", "https://mpmath.org/doc/current/"),
    "python3.11-doc": ("usr/share/doc/python3.11/html", "https://docs.python.org/3.11/"),
    "git-doc": ("usr/share/doc/git-doc", "https://git-scm.com/docs/"),
    # The multi-site crawls of the unattended-recall check (tests/recall_crawl.py). Math:
    "octave-doc": ("usr/share/doc/octave", "https://docs.octave.org/v7.3.0/"),
    "maxima-doc": ("usr/share/doc/maxima-doc/html", "https://maxima.sourceforge.io/docs/manual/"),
    "gap-doc": ("usr/share/gap/doc", "https://docs.gap-system.org/doc/"),
    "libflint-doc": ("usr/share/doc/libflint-dev/html", "https://flintlib.org/doc/"),
    "libflint-arb-doc": ("usr/share/doc/libflint-arb-dev/html", "https://arblib.org/"),
    "libfftw3-doc": ("usr/share/doc/libfftw3-dev/html", "https://www.fftw.org/fftw3_doc/"),
    "python-sympy-doc": ("usr/share/doc/python-sympy-doc/html", "https://docs.sympy.org/latest/"),
    "euler-doc": ("usr/share/doc/euler-doc", "https://euler-math-toolbox.de/"),
    # ... and not math:
    "python-django-doc": ("usr/share/doc/python-django-doc/html", "https://docs.djangoproject.com/en/3.2/"),
    "python-celery-doc": ("usr/share/doc/python-celery-doc/html", "https://docs.celeryq.dev/en/stable/"),
    "python-flask-doc": ("usr/share/doc/python-flask-doc/html", "https://flask.palletsprojects.com/en/2.2.x/"),
    "python-werkzeug-doc": ("usr/share/doc/python-werkzeug-doc/html", "https://werkzeug.palletsprojects.com/en/2.2.x/"),
    "python-requests-doc": ("usr/share/doc/python-requests-doc/html", "https://requests.readthedocs.io/en/latest/"),
    "h2o-doc": ("usr/share/doc/h2o", "https://h2o.examp1e.net/"),
}


def metric_row_steps(path: Path) -> list[int]:
    """The `step` of every row of a metrics.jsonl in the order written: a resumed run appends its
    rows, from the step after the checkpoint it resumed from, to the earlier run's."""
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def pytest_in_fresh_process(cases: Path, report: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the test file `cases` in its own pytest process; returns the process and the counts of
    its JUnit report (tests, failures, errors, skipped)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(cases), "-q", "-p", "no:cacheprovider", "-W", "ignore"]
        + [f"--junitxml={report}"],
        cwd=REPO_ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    counts = {}
    if report.exists():
        suite = ElementTree.parse(report).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        counts = {name: int(suite.get(name, 0)) for name in ("tests", "failures", "errors", "skipped")}
    return result, counts


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m ...` subprocesses: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_module(
    module: str, *args: str, cwd: str | Path | None = None, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess:
    """Run `python -m module args...` for real and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=str(cwd or REPO_ROOT),
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def debian_doc_root(package: str) -> Path:
    """Download (apt-get download) and unpack a Debian documentation package once; return the
    directory of its HTML. Raises RuntimeError with the reason if apt cannot provide it."""
    relative, _ = DEBIAN_DOCS[package]
    return _download_and_unpack(package) / relative


def html_files(root: Path) -> list[Path]:
    """HTML files under root, walked without following symlinked folders (a recursive glob
    follows them and duplicates pages)."""
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                found.append(Path(directory) / name)
    return sorted(found)


def debian_doc_pages(package: str, limit: int | None = None) -> list[tuple[str, bytes, str]]:
    """(url, html bytes, content type) for a package's pages, each at its site's URL with the
    package's real path structure."""
    root = debian_doc_root(package)
    base_url = DEBIAN_DOCS[package][1]
    pages = []
    for path in html_files(root)[:limit]:
        url = base_url + path.relative_to(root).as_posix()
        pages.append((url, path.read_bytes(), "text/html; charset=utf-8"))
    return pages


# Chinese text: Debian's manpages-zh (the CMPP translations, GFDL-1.2+), the zh_CN pages rendered
# by `man -l` and served as HTML paragraphs from their manpages.debian.org addresses.
CHINESE_MAN_PAGES_URL = "https://manpages.debian.org/bookworm/manpages-zh/"


def _download_and_unpack(package: str) -> Path:
    target = CACHE_DIR / "debian" / package
    if target.exists():
        return target
    download = CACHE_DIR / "debian" / "debs"
    download.mkdir(parents=True, exist_ok=True)
    if not list(download.glob(f"{package}_*.deb")):
        result = subprocess.run(["apt-get", "download", package], cwd=download, capture_output=True, text=True)
        if result.returncode != 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            result = subprocess.run(["apt-get", "download", package], cwd=download, capture_output=True, text=True)
        if not list(download.glob(f"{package}_*.deb")):
            raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()[-500:]}")
    staging = target.with_suffix(".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(next(download.glob(f"{package}_*.deb"))), str(staging)], check=True)
    staging.rename(target)
    return target


def chinese_man_pages(limit: int | None = None) -> list[tuple[str, bytes, str]]:
    """(url, html bytes, content type) for the zh_CN manual pages of manpages-zh, rendered once
    (cached). Raises RuntimeError when apt or `man` cannot provide them."""
    rendered = CACHE_DIR / "debian" / "manpages-zh-html"
    if not rendered.exists():
        if shutil.which("man") is None:
            raise RuntimeError("`man` (man-db) is not installed: cannot render manpages-zh")
        root = _download_and_unpack("manpages-zh") / "usr" / "share" / "man" / "zh_CN"
        staging = rendered.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for source in sorted(root.glob("man*/*.gz")):
            name = source.name[: -len(".gz")]
            text = subprocess.run(
                ["man", "-l", str(source)],
                capture_output=True,
                env={**os.environ, "MANWIDTH": "2000", "LANG": "C.UTF-8"},
            ).stdout.decode("utf-8", "replace")
            text = re.sub(".\b", "", text)  # overstrike bold and underline
            lines = [line.strip() for line in text.splitlines()[1:-1] if line.strip()]
            if not lines:
                continue
            paragraphs = (html.escape(" ".join(line.split()), quote=False) for line in lines)
            body = "\n".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
            page = f'<html lang="zh-CN"><head><meta charset="utf-8"><title>{html.escape(name)}</title></head>'
            (staging / f"{name}.html").write_text(f"{page}<body>\n{body}\n</body></html>\n", encoding="utf-8")
        staging.rename(rendered)
    return [
        (f"{CHINESE_MAN_PAGES_URL}{path.stem}.zh_CN.html", path.read_bytes(), "text/html; charset=utf-8")
        for path in sorted(rendered.glob("*.html"))[:limit]
    ]
