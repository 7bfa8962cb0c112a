"""No file in the repository points to a document that is not in it.

Users get this repository and nothing else: a comment, docstring or doc that sends them to
a private notes folder, to a `docs/<name>.md` that does not exist, or a markdown link to a
missing file is a dead end. Checked over every text file git knows about (tracked, plus new
files not ignored), so a broken reference fails before it is committed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A path into a folder named "shared" (../shared/notes.md, shared/docs, /work/shared/x):
# outside the repository, which has no such folder. One exception: a root-level /shared/
# (a cluster's shared filesystem in multi-node examples, e.g. /shared/runs/NAME) unless what
# it names is a document.
SHARED = re.compile(r"(?<![\w.-])(/?)shared/([\w./-]*)")
DOCUMENT = re.compile(r"(?:^|/)docs?(?:/|$)|\.(?:md|rst|txt|pdf|html?)$")
# docs/<name>.md, not as part of a longer path or URL (other projects' docs/ folders).
DOCS_MD = re.compile(r"(?<![\w./-])docs/([\w.-]+\.md)\b")
# Inline links and images [text](target "title") and reference definitions [id]: target.
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
# A bare file name like design.md (not part of a path or URL).
BARE_MD = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][\w+.-]*:|//|#)")  # http:, mailto:, //host, #anchor


def _repo_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    names = sorted({n for n in out.decode().split("\0") if n})
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    found = {}
    for path in _repo_files():
        if path == Path(__file__).resolve():
            continue  # its own examples (test_the_patterns_catch_what_they_should)
        text = _text(path)
        if text is not None:
            found[path] = text
    assert found, "no text files found"
    return found


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _shared_refs(text: str) -> list[re.Match[str]]:
    found = []
    for m in SHARED.finditer(text):
        start = m.start()
        root_mount = m.group(1) == "/" and (start == 0 or not re.match(r"[\w.-]", text[start - 1]))
        if not m.group(2) or (root_mount and not DOCUMENT.search(m.group(2))):
            continue
        found.append(m)
    return found


def test_no_reference_to_a_shared_folder(texts: dict[Path, str]) -> None:
    bad = [
        f"{_rel(p)}:{_line(t, m.start())}: {m.group()}"
        for p, t in texts.items()
        for m in _shared_refs(t)
    ]
    assert not bad, "references outside the repository:\n" + "\n".join(bad)


def test_cited_docs_exist(texts: dict[Path, str]) -> None:
    bad = [
        f"{_rel(p)}:{_line(t, m.start())}: docs/{m.group(1)}"
        for p, t in texts.items()
        for m in DOCS_MD.finditer(t)
        if not (ROOT / "docs" / m.group(1)).is_file()
    ]
    assert not bad, "cited docs missing from docs/:\n" + "\n".join(bad)


def _strip_code(text: str) -> str:
    """Blank out fenced blocks and code spans (examples, not references), keeping lines."""
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group().count("\n"), text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group()), text)


def _markdown_targets(text: str) -> list[tuple[int, str]]:
    text = _strip_code(text)
    found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REF_LINK.finditer(text)]
    return [(_line(text, pos), target) for pos, target in sorted(found)]


def _pages(texts: dict[Path, str]) -> list[Path]:
    docs = ROOT / "docs"
    pages = [
        p for p in texts if p == ROOT / "README.md" or (p.parent == docs and p.suffix == ".md")
    ]
    assert ROOT / "README.md" in pages
    return pages


def test_documents_named_in_prose_exist(texts: dict[Path, str]) -> None:
    """README and docs/ prose naming a bare `name.md` ("as design.md records") needs that file."""
    names = {p.name for p in texts} | {p.name for p in ROOT.glob("*.md")}
    bad = [
        f"{_rel(page)}:{_line(prose, m.start())}: {m.group(1)}"
        for page in _pages(texts)
        for prose in [_strip_code(texts[page])]
        for m in BARE_MD.finditer(prose)
        if m.group(1) not in names
    ]
    assert not bad, "documents named but not in the repository:\n" + "\n".join(bad)


def test_relative_markdown_links_resolve(texts: dict[Path, str]) -> None:
    bad = []
    for page in _pages(texts):
        for line, target in _markdown_targets(texts[page]):
            if EXTERNAL.match(target):
                continue
            path = target.split("#", 1)[0].split("?", 1)[0]
            resolved = (ROOT / path.lstrip("/")) if path.startswith("/") else page.parent / path
            if not resolved.exists():
                bad.append(f"{_rel(page)}:{line}: {target}")
            elif ROOT not in (resolved.resolve(), *resolved.resolve().parents):
                bad.append(f"{_rel(page)}:{line}: {target} (outside the repository)")
    assert not bad, "broken relative links:\n" + "\n".join(bad)


def test_the_patterns_catch_what_they_should() -> None:
    refs = "../shared/docs/a.md, shared/docs, /work/shared/x, /shared/notes.md, (shared/b)"
    assert [m.group() for m in _shared_refs(refs)] == [
        "shared/docs/a.md",
        "shared/docs",
        "shared/x",
        "/shared/notes.md",
        "shared/b",
    ]
    assert not _shared_refs("torch_shared/x, a shared folder, --run-dir /shared/runs/r1 x")
    assert [m.group(1) for m in DOCS_MD.finditer("(docs/vllm.md) and docs/a-b.md.")] == [
        "vllm.md",
        "a-b.md",
    ]
    assert not DOCS_MD.search("https://x.org/p/docs/a.md") and not DOCS_MD.search("src/docs/a.md")
    assert [m.group(1) for m in BARE_MD.finditer("as design.md says; see docs/x.md")] == [
        "design.md"
    ]
    md = '[a](b.md#x) ![i](img.png "t") [c](https://x) `[d](e.md)`\n[r]: ref.md\n'
    assert [t for _, t in _markdown_targets(md)] == ["b.md#x", "img.png", "https://x", "ref.md"]
