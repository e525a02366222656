"""The method documents live in the repository: every `docs/<page>.md#<anchor>` cited in the code resolves.

Checks, over the checkout (cellseg/, configs/, benchmarks/, tests/, data/, sweeps/, the entry points, the Makefile
and README.md):
- every cited page under docs/ exists and every cited `#anchor` is a heading of that page (GitHub's rule:
  lowercase, punctuation dropped, spaces -> '-', repeated headings numbered -1, -2, ...);
- the links between the pages of docs/ resolve the same way;
- no bare name of a design note outside the repository (the spec files, cited without `docs/`) remains.
The last test runs the checks on a small fake tree and shows that each of them fails when it should.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("cellseg", "configs", "benchmarks", "tests", "data", "sweeps", "train.py", "eval.py", "infer.py",
           "Makefile", "README.md")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".sh", ".toml", ".cfg", ".txt", ".csv", ""}
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}

# docs/<path>.md with an optional #anchor, as code comments cite them (relative to the repository root)
CITATION = re.compile(r"docs/((?:[\w.-]+/)*[\w.-]+\.md)(?:#([\w-]+))?")
# names of the design notes that are not part of the repository; built so this file never matches itself
NOTE_NAMES = ("coin", "s2l", "cyclic", "metrics", "data", "framework")
BARE_NOTE = re.compile(r"(?<![\w/.-])(?:" + "|".join(NOTE_NAMES) + r")\.md\b")
# markdown links inside docs/: [text](page.md#anchor), [text](#anchor), [text](../page.md)
DOC_LINK = re.compile(r"\]\(((?:[\w.-]+/)*[\w.-]+\.md)?(?:#([\w-]+))?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lowercase, spaces -> hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Anchors of every heading of a markdown page (fenced code blocks skipped; duplicates get -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def scanned_files(root: Path, entries=SCANNED) -> list[Path]:
    files = []
    for entry in entries:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for candidate in candidates:
            if (candidate.is_file() and candidate.suffix.lower() in TEXT_SUFFIXES
                    and not SKIPPED_DIRS & set(candidate.relative_to(root).parts)):
                files.append(candidate)
    return files


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    return enumerate(text.splitlines(), start=1)


def _check_target(page: Path, anchor: str | None, cache: dict[Path, set[str]]) -> str | None:
    if not page.is_file():
        return f"{page.name} does not exist"
    if anchor is None:
        return None
    if page not in cache:
        cache[page] = anchors(page)
    return None if anchor in cache[page] else f"{page.name} has no heading with the anchor #{anchor}"


def broken_citations(root: Path, entries=SCANNED) -> list[str]:
    """`file:line: what is wrong` for every cited docs page or anchor that does not exist."""
    problems, cache = [], {}
    for path in scanned_files(root, entries):
        for number, line in _lines(path):
            for match in CITATION.finditer(line):
                problem = _check_target(root / "docs" / match.group(1), match.group(2), cache)
                if problem:
                    problems.append(f"{path.relative_to(root)}:{number}: {match.group(0)}: {problem}")
    return problems


def broken_doc_links(root: Path) -> list[str]:
    """The same for the relative links between the pages of docs/."""
    problems, cache = [], {}
    for page in sorted((root / "docs").rglob("*.md")):
        for number, line in _lines(page):
            for match in DOC_LINK.finditer(line):
                target = (page.parent / match.group(1)).resolve() if match.group(1) else page
                problem = _check_target(target, match.group(2), cache)
                if problem:
                    problems.append(f"{page.relative_to(root)}:{number}: {match.group(0)}: {problem}")
    return problems


def bare_note_citations(root: Path, entries=SCANNED) -> list[str]:
    """Citations of a design note by its bare file name (not a path under docs/): they do not resolve."""
    return [f"{path.relative_to(root)}:{number}: {line.strip()}"
            for path in scanned_files(root, entries) for number, line in _lines(path) if BARE_NOTE.search(line)]


# ----------------------------------------------------------------------------------------------- the checkout
def test_docs_pages_exist():
    for page in ("README", "framework", "data", "metrics", "methods/coin", "methods/s2l", "methods/supervised",
                 "methods/cyclic"):
        assert (REPO_ROOT / "docs" / f"{page}.md").is_file(), page


def test_code_cites_the_docs():
    cited = [m.group(0) for path in scanned_files(REPO_ROOT) for _, line in _lines(path)
             for m in CITATION.finditer(line)]
    assert len(cited) >= 50, f"only {len(cited)} docs citations found: is the pattern still right?"


def test_every_cited_page_and_anchor_exists():
    problems = broken_citations(REPO_ROOT)
    assert not problems, "broken docs citations:\n" + "\n".join(problems)


def test_links_between_docs_pages_resolve():
    problems = broken_doc_links(REPO_ROOT)
    assert not problems, "broken links in docs/:\n" + "\n".join(problems)


def test_no_bare_design_note_citation_remains():
    problems = bare_note_citations(REPO_ROOT)
    assert not problems, ("citations of design notes outside the repository; cite docs/<page>.md#<anchor>:\n"
                          + "\n".join(problems))


# ----------------------------------------------------------------------------------------------- the checker
def test_slug_follows_github():
    assert slug("Reference quirks") == "reference-quirks"
    assert slug("ViT features") == "vit-features"
    assert slug("Stage 0: UCIS (A1)") == "stage-0-ucis-a1"
    assert slug("`ema_store` and sidecars") == "ema_store-and-sidecars"
    assert slug("Known gaps and deviations") == "known-gaps-and-deviations"


def test_checks_fail_on_a_broken_tree(tmp_path):
    docs = tmp_path / "docs" / "methods"
    docs.mkdir(parents=True)
    (docs / "page.md").write_text("# Page\n\n## Real heading\n\n```\n## not a heading\n```\n\n## Real heading\n"
                                  "[ok](#real-heading-1) [gone](#nowhere) [other](../missing.md)\n")
    ref = "docs" + "/methods/page.md"
    (tmp_path / "cellseg").mkdir()
    (tmp_path / "cellseg" / "mod.py").write_text(
        f'"""Cites {ref}#real-heading, {ref}#real-heading-1 and {ref}.\n'
        f"Broken: {ref}#not-a-heading, {ref}#no-such-anchor, {'docs' + '/absent.md'}.\n"
        f"Bare: {'coin' + '.md'} (c), see {'metrics' + '.md'} section 2; fine: SOURCE.md, {ref}.\n" + '"""\n')
    assert anchors(docs / "page.md") == {"page", "real-heading", "real-heading-1"}
    broken = broken_citations(tmp_path, entries=("cellseg",))
    assert len(broken) == 3, broken
    assert all(":2:" in problem for problem in broken)
    assert any("absent.md does not exist" in problem for problem in broken)
    links = broken_doc_links(tmp_path)
    assert len(links) == 2 and any("#nowhere" in p for p in links) and any("missing.md" in p for p in links), links
    bare = bare_note_citations(tmp_path, entries=("cellseg",))
    assert len(bare) == 1 and ":3:" in bare[0], bare
