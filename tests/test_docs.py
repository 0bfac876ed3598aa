"""The front door and docs/: every relative link resolves (files and #anchors), every ``python -m core``
subcommand the pages name exists, and the README stays short."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from core import config

ROOT = config.PROJECT_ROOT
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CARD = ROOT / "models" / "unet2d_default" / "MODEL_CARD.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SUBCOMMAND = re.compile(r"python -m core ([a-z][a-z0-9_-]*)")


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than hyphens dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", _without_code_blocks(path.read_text(encoding="utf-8")), flags=re.M)
    return {slug(h) for h in headings}


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_without_code_blocks(path.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ... are not checked


def subcommands() -> set[str]:
    from core.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_docs_folder_holds_the_pages_the_readme_promises() -> None:
    names = {p.name for p in PAGES}
    assert {"user-guide.md", "command-line.md", "raw-studies-and-dicom.md", "deployment.md", "model.md",
            "benchmarks.md"} <= names


def test_readme_is_at_most_200_lines() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", [*PAGES, CARD], ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: links that do not resolve: {broken}"


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [web](https://example.org) [x](#nowhere)\n")
    assert relative_links(page) == ["#title", "missing.md", "#nowhere"]
    assert anchors(page) == {"title"} and slug("Raw studies: to BraTS space and back") == \
        "raw-studies-to-brats-space-and-back"


@pytest.mark.parametrize("page", [*PAGES, CARD], ids=lambda p: p.name)
def test_every_named_subcommand_exists(page: Path) -> None:
    named = set(SUBCOMMAND.findall(page.read_text(encoding="utf-8")))
    missing = named - subcommands() - {"SUBCOMMAND"}
    assert not missing, f"{page.name} names python -m core {sorted(missing)}, which do not exist"
