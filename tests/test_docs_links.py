"""The documentation holds together: every relative link resolves, the README stays a front page.

Checked files: README.md, docs/*.md and benchmarks/README.md. A link is a Markdown inline link or image
(``[text](target)``) outside code; web links (``scheme:``) are not followed. A target must exist inside the
repository; a ``#anchor`` into a Markdown file must name one of its headings (GitHub's slugs) or an
``<a id=...>`` in it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 6000  # issue 26: "README as a front page (≤ 6 KB)"; 6,000 satisfies either reading of KB

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path = ROOT) -> list[Path]:
    """The Markdown pages a reader reaches from the front page."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "benchmarks" / "README.md"]


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: heading slugs (repeats numbered as GitHub does) and explicit ids."""
    seen: dict[str, int] = {}
    found = set(HTML_ID.findall(text))
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One line per link of ``page`` that does not resolve, naming the page, the target and why."""
    problems = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}: ({target})"
        if root.resolve() not in (dest, *dest.parents):
            problems.append(f"{where} points outside the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(root.resolve())}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading or id '{anchor}' in {dest.name}")
    return problems


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.is_file(), f"{page} is missing"
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_front_page() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (> {README_MAX_BYTES}): move detail to docs/"


def test_the_readme_links_every_doc_page() -> None:
    """A page under docs/ that the front page does not link is a page nobody finds."""
    targets = LINK.findall(prose((ROOT / "README.md").read_text()))
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in targets}
    unlinked = [p.name for p in doc_files()[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_the_readme_names_the_two_set_up_commands_ci_runs() -> None:
    """`.ci/run` calls `make test`, "exactly the README's test command": the two must not drift apart."""
    block = (ROOT / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make repro", "make test"]
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()


def test_the_checker_finds_a_missing_file_a_missing_anchor_and_ignores_code(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B page\n\n## Set-up: `make` it\n\n## Set-up: `make` it\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text(
        "[ok](b.md#set-up-make-it) [again](b.md#set-up-make-it-1) [top](#a) [web](https://x.org/y)\n"
        "[gone](missing.md) [bad anchor](b.md#nowhere) [out](../../etc/passwd)\n"
        "`[in a span](nope.md)`\n\n```bash\n# a comment, not a heading\n[in a fence](nope.md)\n```\n"
        "# A\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert "no such file docs/missing.md" in problems[0]
    assert "no heading or id 'nowhere' in b.md" in problems[1]
    assert "outside the repository" in problems[2]
    assert "a-comment-not-a-heading" not in anchors(page.read_text())
