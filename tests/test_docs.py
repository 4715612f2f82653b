"""The front page and the documentation pages: every relative link (a file, a file's `#anchor`, an
anchor of the same page) resolves, the README stays a front page, and the figures that
`speccomp redraw-docs` writes are the ones the pages show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text outside code blocks and code spans (links there are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation other than `-` and `_`
    removed, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown page, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path.read_text())) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_slug_follows_github():
    assert slug("Architecture search (`-e nas`)") == "architecture-search--e-nas"
    assert slug("Measured on spectra, and an honest note") == "measured-on-spectra-and-an-honest-note"
    assert slug("The matrices domain: Raven's-style matrices") == "the-matrices-domain-ravens-style-matrices"


def test_anchors_number_duplicates(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A\n\n```\n# not a heading\n```\n\n## A\n\n## B c\n")
    assert anchors(page) == {"a", "a-1", "b-c"}


def test_link_finder_skips_code_and_external(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](x.md) `[b](y.md)` [c](https://e.org/) ![d](e.png)\n```\n[f](g.md)\n```\n[h](#i)\n")
    assert relative_links(page) == ["x.md", "e.png", "#i"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert broken == []


def test_readme_is_a_front_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for command in ("pip install -r requirements.txt",
                    "mlflow run . --env-manager local --experiment-name speccomp -P seeds=123,124,125",
                    "python -m pytest"):
        assert command in text
    linked = {t.partition("#")[0] for t in relative_links(REPO / "README.md")}
    for name in ("tracking", "configuration", "metrics", "studies", "many-machines", "reliability",
                 "matrices", "nas", "meta", "performance", "layout"):
        assert f"docs/{name}.md" in linked, name


def test_every_page_is_linked_from_the_readme():
    linked = {t.partition("#")[0] for t in relative_links(REPO / "README.md")}
    pages = {f"docs/{p.name}" for p in PAGES[1:] if p.name != "study_report.md"}
    assert pages - linked == set()


def test_redrawn_figures_are_the_ones_the_pages_show():
    """`speccomp redraw-docs` writes these names into docs/ (tracking/redraw_docs.py); a page that
    showed another name would show a figure nobody redraws."""
    from tracking import redraw_docs

    written = set(re.findall(r"^\s{4}(\S+\.(?:png|md))\s", redraw_docs.__doc__, re.M))
    assert {"mse_time_series.png", "study_effects.png", "study_report.md", "results.md", "SOURCES.md"} <= written
    shown = {t for p in PAGES for t in relative_links(p)}
    assert {"docs/mse_time_series.png", "study_effects.png", "results.md"} <= shown
    for name in written:
        assert (REPO / "docs" / name).exists(), name
