"""Record the digest of every image our own workload runs, for every stack file.

    python -m tools.pin_images            # resolve and write components/image-digests.json
    python -m tools.pin_images --check    # exit 1 if a stack's image has no recorded digest

Stacks with `serving.pin_image_digests` (prod by default) run images by digest: a recorded
digest is used as is, so what was reviewed is what runs; an unrecorded one is resolved at
deploy time. Run this after changing `serving.image_version`, review the diff, commit it.
Needs network access to the registries (Docker Hub, ECR Public).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components import images
from components.config import StackConfigError
from components.model_sync import sync_image
from components.serving import serving_image
from tools.lib.stackfile import list_stacks, load_stack_file


def stack_images() -> dict[str, list[images.Image]]:
    """The images each repo stack file runs in its serving pods."""
    out: dict[str, list[images.Image]] = {}
    for stack in list_stacks():
        cfg = load_stack_file(stack)
        out[stack] = [serving_image(cfg.serving), sync_image()]
    return out


def main(argv: list[str] | None = None, path: Path = images.DIGESTS_FILE) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report images with no recorded digest")
    args = parser.parse_args(argv)
    try:
        wanted = stack_images()
    except StackConfigError as err:
        print(err, file=sys.stderr)
        return 2
    recorded = images.recorded_digests(path)
    names = sorted({image.name: image for found in wanted.values() for image in found}.items())
    if args.check:
        missing = [name for name, _ in names if name not in recorded]
        for name in missing:
            print(f"no recorded digest: {name} (run `python -m tools.pin_images`)", file=sys.stderr)
        return 1 if missing else 0
    digests = dict(recorded)
    failed = False
    for name, image in names:
        try:
            digest = images.resolve_digest(image)
        except images.ImageDigestError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        if recorded.get(name) not in (None, digest):
            print(f"{name}: the tag moved, {recorded[name]} -> {digest}")
        digests[name] = digest
        print(f"{name}@{digest}")
    path.write_text(json.dumps({"digests": dict(sorted(digests.items()))}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
