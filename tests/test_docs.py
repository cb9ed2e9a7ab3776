"""The README and docs/ hold together: a README a newcomer can hold, every document in docs/
reachable from it, every relative link and #anchor leading somewhere, and the README's short
install path made of the steps docs/install.md holds (which tests/test_install.py runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# Written on other branches, linked from here before they land: a link to one is allowed only
# while it is missing; once it exists its anchors are checked like any other's.
COMING = {ROOT / "docs" / "scale.md", ROOT / "docs" / "benchmark-apiserver.md"}

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def prose(path: Path) -> str:
    """The text outside fenced code blocks, where links and headings live."""
    return FENCE.sub("", path.read_text())


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives a file's headings: lower case, punctuation dropped, spaces made
    hyphens, and a repeated one numbered."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(prose(path)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_the_readme_is_short_and_lists_its_sections() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 300
    contents = text.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = [title for title, _ in re.findall(r"^- \[(.+?)\]\(#([\w-]+)\)", contents, re.M)]
    sections = re.findall(r"^## +(.+)$", prose(README), re.M)
    assert listed == [title for title in sections if title != "Contents"]


def test_the_first_screen_holds_the_two_fresh_machine_commands() -> None:
    """The test command is the one `.ci/run` runs on a fresh machine (which adds only -q)."""
    first_screen = "\n".join(README.read_text().splitlines()[:40])
    assert (
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/mlflow-webhook serve "
        "--self-signed --no-kube --tracking-uri http://127.0.0.1:5000"
    ) in first_screen
    [ci] = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.startswith("python3 -m venv")
    ]
    assert ci.replace("pip install -q ", "pip install ") in first_screen


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_document_is_linked_from_the_readme(doc: Path) -> None:
    assert f"docs/{doc.name}" in relative_links(README) or any(
        link.startswith(f"docs/{doc.name}#") for link in relative_links(README)
    )


@pytest.mark.parametrize("page", [README, *DOCS], ids=["README.md", *[d.name for d in DOCS]])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        name, _, anchor = link.partition("#")
        target = (page.parent / name).resolve() if name else page
        if target in COMING and not target.exists():
            continue
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, broken


def test_the_readme_install_path_is_the_install_docs() -> None:
    """Each command of the README's short path is one docs/install.md gives (and so one
    tests/test_install.py runs, or tests/test_edited_checkout.py for the image's name)."""
    section = README.read_text().split("\n## Installing it in a cluster\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    install = re.sub(r"\\\n\s*", "", (ROOT / "docs" / "install.md").read_text())
    commands = [
        re.sub(r"\s+#\s.*$", "", line)
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(commands) >= 7
    missing = [command for command in commands if command not in install]
    assert not missing, missing
