"""A generated section of the README: the text between two marker comments, replaced whole.

It only swaps the text between the markers; it must not touch anything outside them.
"""

from __future__ import annotations

from pathlib import Path


def write_between(path: Path, begin: str, end: str, body: str) -> None:
    """Replace what stands between `begin` and `end` in `path` with `body`."""
    text = path.read_text()
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}")
