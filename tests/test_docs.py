"""The README's links: every file it names exists, every anchor is a heading of that page.

MkDocs checks the pages under docs/ in strict mode (``make docs``); the README sits outside
them, so its links are checked here, with the slugs MkDocs gives headings.
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {slugify(re.sub(r"[`*]", "", h).strip(), "-") for h in headings}


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http://", "https://"))]


def test_every_readme_link_resolves():
    broken = []
    for target in _links((ROOT / "README.md").read_text()):
        path, _, anchor = target.partition("#")
        page = ROOT / path if path else ROOT / "README.md"
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(page):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken


def test_the_anchor_check_sees_a_broken_anchor():
    assert "the-demo-configsdemoyaml" in _anchors(ROOT / "docs" / "results.md")
    assert "no-such-heading" not in _anchors(ROOT / "docs" / "results.md")


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
