"""HTML -> plain text, with every math markup kept as delimited TeX.

No extractor keeps all math. Measured on real documentation pages: resiliparse and trafilatura
2.3 both drop `<script type="math/tex">`; resiliparse glues MathML's rendered text to its TeX
annotation (it keeps Sphinx imgmath's `<img alt="LaTeX">`); trafilatura keeps MathML annotations
and KaTeX but drops the image alt text. `$..$`, `$$..$$` and `\\(..\\)` in text survive in both. So
math nodes are first rewritten *in the DOM* into text nodes holding delimited TeX, then resiliparse
(~550 pages/s per core with main-content detection, trafilatura ~30-40) extracts text:

| markup | becomes |
| --- | --- |
| `<script type="math/tex">x</script>` (MathJax v2) | `$x$`; with `mode=display`: `$$x$$` |
| `<math>` with an `application/x-tex` annotation | `$annotation$` (`$$` when display="block") |
| `<math>` without one | `$linearised TeX$` (fractions, scripts, roots, tables, operators) |
| KaTeX `<span class="katex">` | `$annotation$` (`$$` inside `.katex-display`) |
| Sphinx imgmath / LaTeX images `<img class="math" alt="...">` | `$alt$` |
| `$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]` already in text | kept as they are |

MathJax previews and rendered copies (`.MathJax_Preview`, `.MathJax`, `mjx-container` without
MathML) are removed so no formula appears twice.

Pure core: `extract_text(html, url)`. Beam wrapper: `ExtractDoFn` (step `02_extract`), which
turns an `HtmlPage` into a `Document`. Cost: linear in page size; ~1 ms per typical page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from beam_pipelines.accounting import Drop, FilterDoFn
from beam_pipelines.document import Document, estimate_tokens, stable_id

EXTRACT_STEP = "02_extract"

TEX_ENCODINGS = ("application/x-tex", "application/x-latex", "tex", "latex", "text/x-tex")

# Delimited TeX in extracted text, used to count math spans and to strip math for prose signals.
MATH_SPAN_PATTERN = re.compile(
    r"\$\$.+?\$\$|(?<![\\$])\$(?!\s)[^$\n]{1,400}?(?<![\s\\])\$(?!\d)|\\\(.+?\\\)|\\\[.+?\\\]"
    r"|\\begin\{(equation|align|gather|multline|eqnarray)\*?\}.+?\\end\{\1\*?\}",
    re.S,
)


@dataclass(slots=True)
class ExtractResult:
    text: str
    title: str
    math_spans: int
    math_nodes_rewritten: int


def extract_text(html: str, url: str = "", main_content: bool = False, links: bool = False) -> ExtractResult:
    tree = HTMLTree.parse(html)
    rewritten = rewrite_math_nodes(tree)
    text = extract_plain_text(
        tree,
        preserve_formatting=True,
        main_content=main_content,
        list_bullets=True,
        alt_texts=False,
        links=links,
        form_fields=False,
        noscript=False,
        comments=True,
    )
    text = _tidy(text)
    title = (tree.title or "").strip()
    return ExtractResult(text=text, title=title, math_spans=count_math_spans(text), math_nodes_rewritten=rewritten)


def count_math_spans(text: str) -> int:
    return sum(1 for _ in MATH_SPAN_PATTERN.finditer(text))


def strip_math(text: str, placeholder: str = " MATH ") -> str:
    """Prose with each math span replaced by one placeholder word (for language and quality
    signals, so LaTeX punctuation does not look like spam and a formula counts as one word)."""
    return MATH_SPAN_PATTERN.sub(placeholder, text)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r", "").split("\n")]
    out: list[str] = []
    blank = 0
    for line in lines:
        if line.strip():
            blank = 0
            out.append(line)
        else:
            blank += 1
            if blank == 1 and out:
                out.append("")
    return "\n".join(out).strip()


# ----------------------------------------------------------------------------------------------
# DOM rewriting


def rewrite_math_nodes(tree) -> int:
    """Replace every math node in the tree by a text node of delimited TeX. Returns how many."""
    body = tree.body
    if body is None:
        return 0
    count = 0
    # Rendered duplicates first, so their text never reaches the extractor.
    for selector in (".MathJax_Preview", ".MathJax", ".MathJax_Display", ".MathJax_SVG", ".MathJax_CHTML"):
        for node in body.query_selector_all(selector):
            if node.parent is not None:
                node.parent.remove_child(node)
    for node in body.query_selector_all("script"):
        kind = (node.getattr("type") or "").lower()
        if not kind.startswith("math/tex"):
            continue
        tex = (node.text or "").strip()
        display = "mode=display" in kind.replace(" ", "")
        _replace(tree, node, _delimit(tex, display))
        count += 1
    for node in body.query_selector_all(".katex-display .katex, .katex"):
        if node.parent is None:
            continue
        annotation = _tex_annotation(node)
        if annotation is None:
            continue
        display = node.parent is not None and "katex-display" in (node.parent.class_name or "")
        _replace(tree, node, _delimit(annotation, display))
        count += 1
    for node in body.query_selector_all("mjx-container"):
        math = node.query_selector("math")
        if math is None:
            node.parent.remove_child(node)
            continue
        display = node.getattr("display") == "true"
        _replace(tree, node, _delimit(mathml_to_tex(math), display))
        count += 1
    for node in body.query_selector_all("math"):
        if node.parent is None:
            continue
        annotation = _tex_annotation(node)
        tex = annotation if annotation is not None else mathml_to_tex(node)
        display = (node.getattr("display") or "").lower() == "block" or (node.getattr("mode") or "") == "display"
        _replace(tree, node, _delimit(tex, display))
        count += 1
    for node in body.query_selector_all("img"):
        alt = node.getattr("alt")
        if not alt or not _is_math_image(node):
            continue
        tex = _unwrap_delimiters(alt.strip())
        display = _inside_display_block(node)
        _replace(tree, node, _delimit(tex, display))
        count += 1
    return count


def _replace(tree, node, text: str) -> None:
    parent = node.parent
    if parent is None:
        return
    parent.replace_child(tree.create_text_node(text), node)


def _delimit(tex: str, display: bool) -> str:
    tex = " ".join(tex.split())
    if not tex:
        return ""
    return f"\n$${tex}$$\n" if display else f"${tex}$"


def _tex_annotation(node) -> str | None:
    for annotation in node.query_selector_all("annotation"):
        encoding = (annotation.getattr("encoding") or "").lower()
        if encoding in TEX_ENCODINGS:
            return (annotation.text or "").strip()
    return None


_IMAGE_MATH_CLASS = re.compile(r"math|latex|tex\b|equation|formula", re.I)
_IMAGE_MATH_SOURCE = re.compile(r"latex|mathtex|codecogs|/math/|tex2img|wp-latex", re.I)


def _is_math_image(node) -> bool:
    classes = node.class_name or ""
    source = node.getattr("src") or ""
    return bool(_IMAGE_MATH_CLASS.search(classes) or _IMAGE_MATH_SOURCE.search(source))


def _inside_display_block(node) -> bool:
    parent = node.parent
    for _ in range(3):
        if parent is None:
            return False
        classes = parent.class_name or ""
        if parent.tag == "div" and "math" in classes:
            return True
        parent = parent.parent
    return False


def _unwrap_delimiters(tex: str) -> str:
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if tex.startswith(left) and tex.endswith(right) and len(tex) > len(left) + len(right):
            return tex[len(left) : -len(right)].strip()
    return tex


# ----------------------------------------------------------------------------------------------
# MathML -> TeX linearisation (for MathML without a TeX annotation)

_SYMBOLS = {
    "α": r"\alpha",
    "β": r"\beta",
    "γ": r"\gamma",
    "δ": r"\delta",
    "ε": r"\epsilon",
    "ϵ": r"\epsilon",
    "ζ": r"\zeta",
    "η": r"\eta",
    "θ": r"\theta",
    "ι": r"\iota",
    "κ": r"\kappa",
    "λ": r"\lambda",
    "μ": r"\mu",
    "ν": r"\nu",
    "ξ": r"\xi",
    "π": r"\pi",
    "ρ": r"\rho",
    "σ": r"\sigma",
    "τ": r"\tau",
    "υ": r"\upsilon",
    "φ": r"\phi",
    "ϕ": r"\phi",
    "χ": r"\chi",
    "ψ": r"\psi",
    "ω": r"\omega",
    "Γ": r"\Gamma",
    "Δ": r"\Delta",
    "Θ": r"\Theta",
    "Λ": r"\Lambda",
    "Ξ": r"\Xi",
    "Π": r"\Pi",
    "Σ": r"\Sigma",
    "Φ": r"\Phi",
    "Ψ": r"\Psi",
    "Ω": r"\Omega",
    "∑": r"\sum",
    "∏": r"\prod",
    "∫": r"\int",
    "∮": r"\oint",
    "∞": r"\infty",
    "∂": r"\partial",
    "∇": r"\nabla",
    "±": r"\pm",
    "∓": r"\mp",
    "×": r"\times",
    "·": r"\cdot",
    "⋅": r"\cdot",
    "÷": r"\div",
    "≤": r"\le",
    "≥": r"\ge",
    "≠": r"\ne",
    "≈": r"\approx",
    "≡": r"\equiv",
    "∼": r"\sim",
    "≅": r"\cong",
    "∝": r"\propto",
    "→": r"\to",
    "←": r"\leftarrow",
    "⇒": r"\Rightarrow",
    "⇔": r"\Leftrightarrow",
    "↦": r"\mapsto",
    "∈": r"\in",
    "∉": r"\notin",
    "⊂": r"\subset",
    "⊆": r"\subseteq",
    "⊃": r"\supset",
    "⊇": r"\supseteq",
    "∪": r"\cup",
    "∩": r"\cap",
    "∅": r"\emptyset",
    "∀": r"\forall",
    "∃": r"\exists",
    "¬": r"\neg",
    "∧": r"\wedge",
    "∨": r"\vee",
    "⊕": r"\oplus",
    "⊗": r"\otimes",
    "∘": r"\circ",
    "′": "'",
    "″": "''",
    "…": r"\ldots",
    "⋯": r"\cdots",
    "ℝ": r"\mathbb{R}",
    "ℕ": r"\mathbb{N}",
    "ℤ": r"\mathbb{Z}",
    "ℚ": r"\mathbb{Q}",
    "ℂ": r"\mathbb{C}",
    "⟨": r"\langle",
    "⟩": r"\rangle",
    "−": "-",
    "\u2061": "",
    "\u2062": "",
    "\u2063": ",",
    "\u00a0": " ",
}
_FUNCTIONS = {
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "log",
    "ln",
    "exp",
    "lim",
    "max",
    "min",
    "sup",
    "inf",
    "det",
    "gcd",
    "deg",
    "dim",
    "ker",
    "arg",
    "sinh",
    "cosh",
    "tanh",
    "arcsin",
    "arccos",
    "arctan",
    "Pr",
    "mod",
}
_LARGE_OPERATORS = {r"\sum", r"\prod", r"\int", r"\oint", r"\lim", r"\max", r"\min", r"\sup", r"\inf"}


def _token(text: str) -> str:
    text = text.strip()
    if text in _FUNCTIONS:
        return "\\" + text
    out = "".join(_SYMBOLS.get(ch, ch) for ch in text)
    if out.startswith("\\") and out[-1:].isalpha():
        out += " "
    return out


def _group(tex: str) -> str:
    tex = tex.strip()
    if len(tex) == 1:
        return tex
    return "{" + tex + "}"


def mathml_to_tex(node) -> str:
    """A faithful TeX rendering of a MathML element tree (presentation markup)."""
    return " ".join(_mathml(node).split())


def _element_children(node) -> list:
    return list(node.children)


def _mathml(node) -> str:
    tag = (node.tag or "").lower()
    if ":" in tag:
        tag = tag.split(":", 1)[1]
    kids = _element_children(node)
    parts = [_mathml(kid) for kid in kids]
    if tag in ("mi", "mn", "mo"):
        return _token(node.text or "")
    if tag in ("mtext", "ms"):
        text = (node.text or "").strip()
        return rf"\text{{{text}}}" if text else " "
    if tag == "mspace":
        return " "
    if tag == "semantics":
        return parts[0] if parts else ""
    if tag in ("annotation", "annotation-xml", "none", "mprescripts"):
        return ""
    if tag == "mfrac" and len(parts) >= 2:
        return rf"\frac{{{parts[0]}}}{{{parts[1]}}}"
    if tag == "msqrt":
        return rf"\sqrt{{{' '.join(parts)}}}"
    if tag == "mroot" and len(parts) >= 2:
        return rf"\sqrt[{parts[1]}]{{{parts[0]}}}"
    if tag == "msup" and len(parts) >= 2:
        return f"{_group(parts[0])}^{_group(parts[1])}"
    if tag == "msub" and len(parts) >= 2:
        return f"{_group(parts[0])}_{_group(parts[1])}"
    if tag == "msubsup" and len(parts) >= 3:
        return f"{_group(parts[0])}_{_group(parts[1])}^{_group(parts[2])}"
    if tag in ("munder", "mover", "munderover") and len(parts) >= 2:
        base = parts[0].strip()
        if base in _LARGE_OPERATORS or base.rstrip() in _LARGE_OPERATORS:
            if tag == "munder":
                return f"{base}_{_group(parts[1])}"
            if tag == "mover":
                return f"{base}^{_group(parts[1])}"
            return f"{base}_{_group(parts[1])}^{_group(parts[2] if len(parts) > 2 else '')}"
        accents = {
            "^": r"\hat",
            "ˆ": r"\hat",
            "~": r"\tilde",
            "˜": r"\tilde",
            "¯": r"\bar",
            "‾": r"\overline",
            "→": r"\vec",
            "\\to": r"\vec",
            ".": r"\dot",
            "˙": r"\dot",
            "¨": r"\ddot",
        }
        if tag == "mover" and parts[1].strip() in accents:
            return f"{accents[parts[1].strip()]}{{{base}}}"
        if tag == "munder":
            return rf"\underset{{{parts[1]}}}{{{base}}}"
        if tag == "mover":
            return rf"\overset{{{parts[1]}}}{{{base}}}"
        return rf"\underset{{{parts[1]}}}{{\overset{{{parts[2] if len(parts) > 2 else ''}}}{{{base}}}}}"
    if tag == "mfenced":
        open_ = node.getattr("open") if node.hasattr("open") else "("
        close = node.getattr("close") if node.hasattr("close") else ")"
        separator = (node.getattr("separators") or ",")[:1]
        return rf"\left{open_ or '.'} {separator.join(parts)} \right{close or '.'}"
    if tag == "mtable":
        rows = []
        for row in kids:
            cells = (
                [_mathml(cell) for cell in _element_children(row)] if row.tag.lower().endswith("tr") else [_mathml(row)]
            )
            rows.append(" & ".join(cells))
        return r"\begin{matrix} " + r" \\ ".join(rows) + r" \end{matrix}"
    if tag == "menclose":
        notation = node.getattr("notation") or ""
        inner = " ".join(parts)
        return rf"\sqrt{{{inner}}}" if "radical" in notation else rf"\boxed{{{inner}}}"
    if tag == "mphantom":
        return ""
    if tag == "mmultiscripts" and parts:
        base, scripts = parts[0], parts[1:]
        tex = _group(base)
        for index in range(0, len(scripts) - 1, 2):
            sub, sup = scripts[index], scripts[index + 1]
            if sub.strip():
                tex += f"_{_group(sub)}"
            if sup.strip():
                tex += f"^{_group(sup)}"
        return tex
    # math, mrow, mstyle, mpadded, merror, mtd and unknown containers: concatenate.
    if not kids:
        return _token(node.text or "")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# Beam step


def domain_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def page_document(page) -> Document:
    """A Document carrying a page's provenance (text filled by extraction)."""
    return Document(
        id=stable_id(page.warc_record_id or f"{page.warc_file}@{page.warc_offset}"),
        url=page.url,
        domain=domain_of(page.url),
        warc_file=page.warc_file,
        warc_offset=page.warc_offset,
        warc_record_id=page.warc_record_id,
        fetch_date=page.fetch_date,
        content_type=page.content_type,
        charset=getattr(page, "charset", ""),
    )


class ExtractDoFn(FilterDoFn):
    """HtmlPage -> Document with text; drops pages with too little text (`too_little_text`)."""

    step = EXTRACT_STEP

    def __init__(self, main_content: bool = False, min_characters: int = 1):
        super().__init__()
        self.main_content = main_content
        self.min_characters = min_characters

    def process(self, page):
        # Removed rows need a Document, not the raw page: build it once, then decide on it.
        self._page = page
        yield from super().process(page_document(page))

    def decide(self, document: Document) -> Document | Drop:
        page = self._page
        result = extract_text(page.html, page.url, main_content=self.main_content)
        if len(result.text) < self.min_characters:
            return Drop("too_little_text", f"{len(result.text)} characters")
        document.text = result.text
        document.title = result.title
        document.math_spans = result.math_spans
        document.token_estimate = estimate_tokens(result.text)
        return document
