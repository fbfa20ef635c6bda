"""The upstream reference data the tests check against (CRD schemas, chart sources and default
values, IAM policies at our pinned versions): `../shared/reference` beside the repo, or
`$TFS_REFERENCE_DIR`, described by its SOURCES.md.

It owns where that folder is and the one way to reach into it, `reference(...)`, which fails
the test naming what is missing. It must never skip a test, and the data is never copied into
the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(os.environ.get("TFS_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


def reference(*parts: str) -> Path:
    """The file or folder at `parts` under the reference data; the test fails if it is missing."""
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"reference data missing: {path} (the tests read upstream data from {REFERENCE_DIR}, "
            f"see its SOURCES.md; check that folder out beside the repo or set TFS_REFERENCE_DIR)",
            pytrace=False,
        )
    return path
