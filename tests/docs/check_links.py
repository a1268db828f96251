#!/usr/bin/env python3
"""Checks the front door and the docs, as a reader following links would.

- README.md is at most 10 KB (10,240 bytes): it is the front door; the long
  sections live in docs/.
- Every relative link in README.md and docs/*.md resolves to a file or
  directory inside the repository, and a `#fragment` names a heading of the
  target page (GitHub's anchor rules).
- No link, in those pages or anywhere, leaves the repository by a relative
  path (`../` above the root).

Web links (http, https, mailto) are not fetched. Run from anywhere:
`python3 tests/docs/check_links.py`; exits non-zero on any failure.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README_MAX_BYTES = 10 * 1024

# [text](target) and [text](target "title"), not images' sources only: both.
INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def anchors_of(page: Path) -> set[str]:
    """The fragments GitHub makes for the headings of a Markdown page."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for match in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.MULTILINE):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def links_of(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = CODE_SPAN.sub("", text)
    return INLINE.findall(text) + REFERENCE.findall(text)


def check_page(page: Path) -> list[str]:
    problems = []
    for target in links_of(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # a web link, not fetched
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(REPO)}: link {target!r}"
        if REPO != resolved and REPO not in resolved.parents:
            problems.append(f"{where} leaves the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: {resolved.relative_to(REPO)} does not exist")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors_of(resolved):
            problems.append(f"{where}: no heading #{fragment} in {resolved.relative_to(REPO)}")
    return problems


def main() -> int:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    passed = failed = 0
    problems: list[str] = []

    size = (REPO / "README.md").stat().st_size
    if size > README_MAX_BYTES:
        problems.append(f"README.md is {size} bytes, over {README_MAX_BYTES}")
        failed += 1
    else:
        print(f"README.md: {size} bytes (at most {README_MAX_BYTES})")
        passed += 1

    for page in pages:
        found = check_page(page)
        count = len(links_of(page))
        if found:
            problems.extend(found)
            failed += 1
        else:
            print(f"{page.relative_to(REPO)}: {count} links resolve")
            passed += 1

    for problem in problems:
        print(f"FAIL {problem}")
    print(f"docs: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
