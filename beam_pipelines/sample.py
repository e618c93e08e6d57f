"""The embedded sample WARC: real text found on this machine, packed as web pages.

No crawl is reachable offline, so the default run builds its own small crawl from documentation
that is installed with the project's dependencies:
- math pages: docstrings of sympy and mpmath functions and classes, one page per object, at
  `docs.sympy.org` / `mpmath.org` style URLs. Their reST math (`:math:` roles and `.. math::`
  blocks) is rendered in every markup the extractor must handle - MathJax `\\(..\\)` spans (the
  Sphinx default), `<script type="math/tex">`, MathML with and without a TeX annotation, KaTeX,
  Sphinx imgmath `<img alt>`, and plain `$..$` - chosen per page by a stable hash;
- other pages: docstrings of Python standard-library modules at `docs.python.org` URLs;
- the things a real crawl has: non-HTML responses (a PNG shipped with matplotlib),
  the same page under a tracking-parameter URL, and a verbatim mirror on another host.

Records are written with warcio, gzip per record, as Common Crawl does. The build is
deterministic (same machine, same packages -> same bytes) and takes a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from sympy.parsing.latex import parse_latex
from sympy.printing.mathml import mathml

from beam_pipelines.io.warc import write_html_warc
from beam_pipelines.transforms.extract import extract_text

MATH_FORMS = ("mathjax_span", "mathjax_script", "mathml_annotated", "mathml_bare", "katex", "imgmath", "dollar")

_STDLIB_SKIP = {
    "math",
    "cmath",
    "statistics",
    "fractions",
    "decimal",
    "numbers",
    "random",
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "venv",
    "test",
    "pydoc_data",
}
# The mathematical parts of sympy (not its printing, parsing or testing utilities).
_SYMPY_MATH_PACKAGES = [
    "sympy.functions",
    "sympy.integrals",
    "sympy.series",
    "sympy.solvers",
    "sympy.ntheory",
    "sympy.combinatorics",
    "sympy.sets",
    "sympy.matrices",
    "sympy.simplify",
    "sympy.calculus",
    "sympy.geometry",
    "sympy.stats",
    "sympy.discrete",
    "sympy.polys",
    "sympy.concrete",
    "sympy.logic",
    "sympy.vector",
    "sympy.holonomic",
]
# `:math:` roles, and sympy's default role: single backticks are math in its documentation.
_INLINE_MATH = re.compile(r":math:`([^`]+)`|(?<![`\w])`([^`\n]+)`(?![`_])")
_BLOCK_MATH = re.compile(r"^([ \t]*)\.\. math\s*::[ \t]*(.*)\n((?:\1[ \t]+.*\n|[ \t]*\n)*)", re.M)


@dataclass(frozen=True)
class SamplePage:
    url: str
    title: str
    docstring: str
    signature: str
    is_math: bool


def ensure_sample_warc(directory: str, max_math_pages: int = 400, max_other_pages: int = 400) -> str:
    """Build the sample WARC under `directory` unless it is already there; return its path."""
    path = Path(directory) / f"sample-m{max_math_pages}-o{max_other_pages}.warc.gz"
    if path.exists() and path.stat().st_size > 0:
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pages = collect_sample_pages(max_math_pages, max_other_pages)
    partial = path.with_suffix(".partial")
    write_sample_warc(str(partial), pages)
    os.replace(partial, path)
    return str(path)


def sample_seed_positives_path(directory: str, max_math_pages: int = 400, count: int = 150) -> str:
    """Where `ensure_sample_seed_positives` writes (or finds) its file."""
    return str(Path(directory) / f"seed_positives-after{max_math_pages}-n{count}.jsonl")


def ensure_sample_seed_positives(directory: str, max_math_pages: int = 400, count: int = 150) -> str:
    """Seed positives for the recall loop on the sample crawl, as OpenWebMath-style JSONL (`text`,
    `url`): math documentation pages that are *not* in the sample crawl (the next `count` pages
    after its first `max_math_pages`), rendered with `$..$` math and extracted by the real
    extractor. Like OpenWebMath for Common Crawl, they resemble the math in the pool without being
    its pages. Built once; returns the path."""
    path = Path(sample_seed_positives_path(directory, max_math_pages, count))
    if path.exists() and path.stat().st_size > 0:
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pages = _round_robin([_mpmath_pages(), _pages_of_packages(_SYMPY_MATH_PACKAGES, True)], max_math_pages + count)
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for page in pages[max_math_pages:]:
            text = extract_text(render_page(page, "dollar"), page.url, main_content=True).text
            handle.write(json.dumps({"url": page.url, "text": text}, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return str(path)


def collect_sample_pages(max_math_pages: int, max_other_pages: int) -> list[SamplePage]:
    math_pages = _round_robin([_mpmath_pages(), _pages_of_packages(_SYMPY_MATH_PACKAGES, True)], max_math_pages)
    other_pages = _round_robin([_pages_of_packages(_stdlib_modules(), False)], max_other_pages)
    return math_pages + other_pages


def _stdlib_modules() -> list[str]:
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _STDLIB_SKIP)
    return names


def _round_robin(sources: list, limit: int) -> list[SamplePage]:
    """Take pages from each source in turn, so a small limit still covers every source."""
    iterators = [iter(source) for source in sources]
    pages: list[SamplePage] = []
    while iterators and len(pages) < limit:
        for iterator in list(iterators):
            page = next(iterator, None)
            if page is None:
                iterators.remove(iterator)
            elif len(pages) < limit:
                pages.append(page)
    return pages


def _mpmath_pages():
    """mpmath keeps its function documentation (rich in `.. math::`) as strings in
    `mpmath.function_docs`, attached to context methods at import time."""
    module = _quiet_import("mpmath.function_docs")
    if module is None:
        return
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or not isinstance(value, str) or len(value.split()) < 60:
            continue
        yield SamplePage(
            url=f"https://mpmath.org/doc/current/functions/{name}.html",
            title=f"mpmath.{name}",
            docstring=inspect.cleandoc(value),
            signature="",
            is_math=True,
        )


def _pages_of_packages(roots: list[str], is_math: bool):
    for root in roots:
        yield from _pages_of_package(root, is_math)


def _quiet_import(name: str):
    """Import a module without letting it print, warn or exit (some modules run code on import)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:  # SystemExit and KeyboardInterrupt-like exits from module code too
            return None


def _pages_of_package(root: str, is_math: bool):
    package = _quiet_import(root)
    if package is None:
        return
    names = [root]
    if hasattr(package, "__path__"):
        names += sorted(
            m.name
            for m in pkgutil.walk_packages(package.__path__, root + ".", onerror=lambda _: None)
            if not re.search(r"\.(tests?|benchmarks?|_[a-z])", m.name)
        )
    seen: set[int] = set()
    for name in names:
        module = _quiet_import(name)
        if module is None:
            continue
        for attribute, value in sorted(vars(module).items()):
            if attribute.startswith("_") or id(value) in seen:
                continue
            if not (inspect.isfunction(value) or inspect.isclass(value)):
                continue
            if getattr(value, "__module__", None) != name:
                continue
            # The object's own docstring: inspect.getdoc would hand a subclass its parent's
            # text, and hundreds of copies of one docstring are not a crawl's pages.
            docstring = inspect.cleandoc(value.__doc__) if isinstance(value.__doc__, str) else ""
            if len(docstring.split()) < 60:
                continue
            seen.add(id(value))
            try:
                signature = str(inspect.signature(value))
            except (TypeError, ValueError):
                signature = ""
            yield SamplePage(
                url=_url_for(root, name, attribute),
                title=f"{name}.{attribute}",
                docstring=docstring,
                signature=signature,
                is_math=is_math,
            )


def _url_for(root: str, module: str, attribute: str) -> str:
    path = module.replace(".", "/")
    if root.startswith("sympy"):
        return f"https://docs.sympy.org/latest/modules/{path}/{attribute}.html"
    return f"https://docs.python.org/3/library/{path}/{attribute}.html"


def _form_of(url: str) -> str:
    digest = int(hashlib.sha1(url.encode()).hexdigest()[:8], 16)
    return MATH_FORMS[digest % len(MATH_FORMS)]


# ----------------------------------------------------------------------------------------------
# Rendering


def render_page(page: SamplePage, form: str | None = None) -> str:
    form = form or (_form_of(page.url) if page.is_math else "mathjax_span")
    body = _render_docstring(page.docstring, form)
    head_script = ""
    if form.startswith("mathjax"):
        head_script = (
            "<script async "
            'src="https://cdn.jsdelivr.net/npm/mathjax@2/MathJax.js?config=TeX-AMS-MML_HTMLorMML"></script>'
        )
    elif form == "katex":
        head_script = '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/katex/dist/katex.min.css">'
    title = html.escape(page.title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>{head_script}</head><body>"
        '<nav class="sidebar"><a href="/">Home</a> | <a href="/genindex.html">Index</a> | <a '
        'href="/search.html">Search</a></nav>'
        f'<div class="document"><div class="body" role="main"><h1>{title}</h1>'
        f'<p class="signature"><code>{html.escape(page.title.rsplit(".", 1)[-1] + page.signature)}</code></p>'
        f"{body}</div></div>"
        "<footer>Built from installed documentation.</footer></body></html>"
    )


def _render_docstring(docstring: str, form: str) -> str:
    blocks: list[str] = []
    position = 0
    for match in _BLOCK_MATH.finditer(docstring + "\n"):
        blocks.append(_render_prose(docstring[position : match.start()], form))
        tex = " ".join((match.group(2) + " " + match.group(3)).split())
        if tex:
            blocks.append(f'<div class="math">{_render_math(tex, True, form)}</div>')
        position = match.end()
    blocks.append(_render_prose(docstring[position:], form))
    return "".join(blocks)


def _render_prose(text: str, form: str) -> str:
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        if paragraph.lstrip().startswith(">>>"):
            out.append(f"<pre>{html.escape(paragraph)}</pre>")
            continue
        pieces: list[str] = []
        position = 0
        for match in _INLINE_MATH.finditer(paragraph):
            pieces.append(html.escape(paragraph[position : match.start()]))
            pieces.append(_render_math(match.group(1) or match.group(2), False, form))
            position = match.end()
        pieces.append(html.escape(paragraph[position:]))
        out.append(f"<p>{''.join(pieces)}</p>")
    return "".join(out)


def _render_math(tex: str, display: bool, form: str) -> str:
    escaped = html.escape(tex)
    if form == "mathjax_span":
        delimited = f"\\[{escaped}\\]" if display else f"\\({escaped}\\)"
        return f'<span class="math notranslate nohighlight">{delimited}</span>'
    if form == "mathjax_script":
        mode = "; mode=display" if display else ""
        return f'<span class="MathJax_Preview">{escaped}</span><script type="math/tex{mode}">{escaped}</script>'
    if form == "mathml_annotated":
        attribute = ' display="block"' if display else ""
        return (
            "<math "
            f'xmlns="http://www.w3.org/1998/Math/MathML"{attribute}><semantics><mrow><mtext>{escaped}</mtext></mrow>'
            f'<annotation encoding="application/x-tex">{escaped}</annotation></semantics></math>'
        )
    if form == "mathml_bare":
        mathml = _presentation_mathml(tex)
        if mathml is not None:
            attribute = ' display="block"' if display else ""
            return f'<math xmlns="http://www.w3.org/1998/Math/MathML"{attribute}>{mathml}</math>'
        return _render_math(tex, display, "mathml_annotated")
    if form == "katex":
        inner = (
            '<span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>x</mi></mrow>'
            f'<annotation encoding="application/x-tex">{escaped}</annotation></semantics></math></span>'
            f'<span class="katex-html" aria-hidden="true"><span class="base">{escaped[:20]}</span></span></span>'
        )
        return f'<span class="katex-display">{inner}</span>' if display else inner
    if form == "imgmath":
        name = hashlib.sha1(tex.encode()).hexdigest()[:16]
        return f'<img class="math" src="_images/math/{name}.png" alt="{escaped}"/>'
    return f"$${escaped}$$" if display else f"${escaped}$"


def _presentation_mathml(tex: str) -> str | None:
    """sympy's own LaTeX parser and MathML printer: real MathML for the bare-MathML pages."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expression = parse_latex(tex, backend="lark")
            return mathml(expression, printer="presentation")
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------
# Writing


def _png_bytes() -> bytes | None:
    try:
        images = Path(matplotlib.get_data_path()) / "images"
        for candidate in sorted(images.glob("*.png")):
            return candidate.read_bytes()
    except Exception:
        return None
    return None


def write_sample_warc(path: str, pages: list[SamplePage]) -> int:
    def records():
        for index, page in enumerate(pages):
            body = render_page(page).encode("utf-8")
            yield page.url, body, "text/html; charset=utf-8"
            # A crawl sees some pages twice: a tracking-parameter link and a mirror host.
            if index % 37 == 5:
                yield page.url + "?utm_source=newsletter&utm_medium=email", body, "text/html; charset=utf-8"
            if index % 41 == 7:
                mirror = re.sub(r"^https://[^/]+", "https://mirror.docs-archive.net", page.url)
                yield mirror, body, "text/html; charset=utf-8"
        png = _png_bytes()
        if png:
            yield "https://docs.sympy.org/latest/_images/logo.png", png, "image/png"
        yield "https://docs.python.org/3/library/robots.txt", b"User-agent: *\nDisallow:\n", "text/plain"

    count = write_html_warc(path, records())
    return count
