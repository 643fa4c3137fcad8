"""Generate the Python gRPC code under credits/ from protos/.

    python scripts/gen_protos.py          # regenerate in place
    python scripts/gen_protos.py --check  # exit 1 if the committed code is stale

Generated files are never edited by hand; the check runs in the test command.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT_PACKAGE = "credits"


def generate(output_dir: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={output_dir}",
        f"--pyi_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package_root = output_dir / OUTPUT_PACKAGE
    for directory in [package_root, *[d for d in package_root.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()
    return sorted(p.relative_to(output_dir) for p in package_root.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    options = parser.parse_args()
    if not options.check:
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            str(p) for p in fresh if not (ROOT / p).exists() or not filecmp.cmp(Path(tmp) / p, ROOT / p, shallow=False)
        ]
        committed = sorted(
            p.relative_to(ROOT)
            for p in (ROOT / OUTPUT_PACKAGE).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        extra = [str(p) for p in committed if p not in fresh]
    if stale or extra:
        print(f"generated code is stale: {stale + extra}; run python scripts/gen_protos.py", file=sys.stderr)
        return 1
    print("generated code is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
