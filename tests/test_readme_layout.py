"""README's Layout section names folders and files that exist.

The block is a tree: a name is relative to the folder of the line above it
indented one level less (two spaces a level). A line whose name column is
empty continues the description above it. Moving or renaming a folder
without updating README fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block, "README's Layout section has no code block"
    return block.group(1).splitlines()


def named_paths(lines: list[str]) -> list[Path]:
    """Every path the tree names, from its indentation."""
    parents: dict[int, Path] = {}
    paths: list[Path] = []
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if not line.strip() or indent >= 20:  # a blank line, or a description going on
            continue
        names = re.split(r" {2,}", line.strip(), maxsplit=1)[0]
        assert indent % 2 == 0, f"odd indentation: {line!r}"
        level = indent // 2
        base = parents[level - 1] if level else ROOT
        for name in names.split(" "):
            path = base / name
            paths.append(path)
            if name.endswith("/"):
                parents[level] = path
    return paths


def test_the_layout_names_what_exists() -> None:
    paths = named_paths(layout_block())
    assert ROOT / "services/edgesense/api/" in paths
    assert ROOT / "services/edgesense/delivery/accept/" in paths
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing, f"README's Layout names what is not there: {missing}"


def test_a_moved_folder_would_be_noticed() -> None:
    lines = ["services/edgesense/      the package", "  gateway/               the old name"]
    (package, moved) = named_paths(lines)
    assert package.is_dir()
    assert moved == ROOT / "services/edgesense/gateway"
    assert not moved.exists()
