"""TensorFlow's generated protobuf modules, without TensorFlow: the `*_pb2.py` files TF Serving's
API modules import (`tensorflow.core.framework.tensor_pb2` and the modules those import),
extracted from the pinned TensorFlow wheel into a directory a `.pth` file puts on the path.

    python -m tools.tf_protos --wheel tensorflow_cpu-...whl --dest .venv/tf-protos --site-packages DIR

`tensorflow-serving-api`'s `apis/*_pb2.py` import TensorFlow's messages (TensorProto,
SignatureDef, ...), which only the TensorFlow wheel carries. The directory holds no
`tensorflow/__init__.py`: `tensorflow` is a namespace package of generated messages only, so
`import tensorflow` never loads (or pretends to be) the real framework. The Makefile downloads
the wheel (pinned, sha256 checked) and runs this as part of the virtual environment's set-up.

It must not write anything but the generated modules it extracts and the one `.pth` file,
nor import the modules it extracts.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

PTH_NAME = "tf-protos.pth"
# `from tensorflow.x.y import z_pb2 as ...`: the import lines protoc writes in Python gencode.
_IMPORT = re.compile(r"^from (tensorflow(?:\.\w+)*) import (\w+_pb2)\b", re.M)
# TensorFlow's messages the project imports itself, beyond those TF Serving's modules import:
# SavedModel, whose serving signatures the publisher checks warm-up requests against
# (tools/lib/warmup.py). Written as gencode's import lines, so they are followed the same way.
PROJECT_IMPORTS = "from tensorflow.core.protobuf import saved_model_pb2\n"


def wanted_modules(roots: list[str], read: dict[str, str]) -> set[str]:
    """Every `tensorflow/...*_pb2.py` path the sources in `roots` import, transitively, among
    the modules `read` holds (path -> text); KeyError names a module the wheel lacks."""
    wanted: set[str] = set()
    pending = list(roots)
    while pending:
        text = pending.pop()
        for package, module in _IMPORT.findall(text):
            path = f"{package.replace('.', '/')}/{module}.py"
            if path in wanted:
                continue
            if path not in read:
                raise KeyError(path)
            wanted.add(path)
            pending.append(read[path])
    return wanted


def extract(wheel: Path, dest: Path, importers: list[Path], also: str = "") -> list[str]:
    """Extract into `dest` the TensorFlow gencode `importers` (TF Serving's modules) need, and
    that which the import lines in `also` need."""
    with zipfile.ZipFile(wheel) as archive:
        generated = {
            name: archive.read(name).decode()
            for name in archive.namelist()
            if name.startswith("tensorflow/") and name.endswith("_pb2.py")
        }
        sources = [p.read_text() for p in importers] + [also]
        wanted = sorted(wanted_modules(sources, generated))
        for name in wanted:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(generated[name])
    return wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.tf_protos", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help="the TensorFlow wheel")
    parser.add_argument("--dest", type=Path, required=True, help="directory to extract into")
    parser.add_argument("--site-packages", type=Path, required=True, help="where the .pth file goes")
    args = parser.parse_args(argv)
    import tensorflow_serving  # the installed API package whose imports decide what is needed

    serving_dir = Path(next(iter(tensorflow_serving.__path__)))
    importers = sorted(serving_dir.rglob("*_pb2*.py"))
    if not importers:
        print(f"error: no generated modules under {serving_dir}", file=sys.stderr)
        return 2
    try:
        wanted = extract(args.wheel, args.dest, importers, also=PROJECT_IMPORTS)
    except KeyError as exc:
        print(f"error: {args.wheel.name} has no {exc.args[0]}, which TF Serving's modules import", file=sys.stderr)
        return 1
    except (OSError, zipfile.BadZipFile) as exc:
        print(f"error: cannot read {args.wheel}: {exc}", file=sys.stderr)
        return 2
    (args.site_packages / PTH_NAME).write_text(f"{args.dest.resolve()}\n")
    print(f"{len(wanted)} TensorFlow generated modules in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
