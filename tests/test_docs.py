"""The documentation stays whole: every page reachable from README.md, every relative link and picture
there, and every option of every command documented (docs/commands.md lists them per command, both ways)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.parse import unquote

from vsr.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("vsr",)) -> dict[str, set[str]]:
    """Each command that takes arguments itself (`vsr`, `vsr upscale`, `vsr srflow restore`...) -> its
    option strings, help aside. A command with subcommands has only those (and --help) below `vsr`."""
    found: dict[str, set[str]] = {}
    options = {s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs or options:
        found[" ".join(path)] = options
    for sub in subs:
        for name, child in sub.choices.items():
            found.update(commands(child, path + (name,)))
    return found


def sections(text: str) -> dict[str, str]:
    """`## \\`vsr CMD\\`` heading -> the text below it, up to the next heading."""
    parts = re.split(r"^## `(vsr[^`]*)`\s*$", text, flags=re.M)
    return {parts[i]: re.split(r"^#", parts[i + 1], flags=re.M)[0] for i in range(1, len(parts), 2)}


def table_options(section: str) -> set[str]:
    """The option strings in the first column of the section's table rows."""
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {m for cell in first_cells for m in OPTION.findall(cell)}


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / unquote(t.split("#")[0])).resolve() for t in LINK.findall(readme) if not t.startswith("#")}
    assert PAGES, "docs/ has no pages"
    missing = [p.name for p in PAGES if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def anchors(page: Path) -> set[str]:
    """The anchors a markdown viewer gives the page's headings: lower case, punctuation dropped,
    spaces as hyphens ("## srflow's other uses" -> srflows-other-uses)."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_and_picture_exists():
    broken = []
    for page in [ROOT / "README.md", *PAGES]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # web addresses
            file, _, anchor = unquote(target).partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, f"links to missing files or headings: {broken}"


def test_anchors_follow_the_headings():
    assert {"srflows-other-uses", "analog-sources-vhs-dvd"} <= anchors(DOCS / "models.md") | anchors(
        DOCS / "upscale.md")


def test_link_checker_sees_a_broken_link():
    assert LINK.findall("a ![pic](gone.png) and [page](other.md#part)") == ["gone.png", "other.md#part"]


def test_every_option_of_every_command_is_documented():
    everything = "\n".join(p.read_text() for p in [ROOT / "README.md", *PAGES])
    undocumented = [f"{cmd} {opt}" for cmd, opts in commands(build_parser()).items() for opt in sorted(opts)
                    if not re.search(re.escape(opt) + r"(?![\w-])", everything)]
    assert not undocumented, f"options in no page: {undocumented}"


def test_commands_page_lists_each_command_with_exactly_its_options():
    listed = sections((DOCS / "commands.md").read_text())
    cmds = commands(build_parser())
    assert {"vsr upscale", "vsr repair", "vsr train", "vsr srflow restore"} <= set(cmds)
    assert "vsr srflow" not in cmds  # only subcommands, no options of its own
    assert sorted(cmds) == sorted(listed), "docs/commands.md needs one `## \\`vsr CMD\\`` section per command"
    for cmd, opts in cmds.items():
        documented = table_options(listed[cmd])
        assert opts <= documented, f"{cmd}: options missing from docs/commands.md: {sorted(opts - documented)}"
        assert documented <= opts, f"{cmd}: docs/commands.md lists options it lacks: {sorted(documented - opts)}"
