"""Parse every .bicep file under a directory with pycep; exit 1 if any fails.

Checkov uses the same parser and skips files it cannot parse, so a file that fails here would
otherwise be scanned by nothing. .bicepparam files are not Bicep modules (pycep cannot read them);
infra/tests/test_templates.py checks the example parameter file instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pycep import BicepParser


def main(root: str) -> int:
    parser = BicepParser()
    files = sorted(Path(root).rglob("*.bicep"))
    if not files:
        print(f"no .bicep files under {root}", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        try:
            doc = parser.parse(file_path=path)
        except Exception as err:  # pycep raises lark errors of several kinds
            failed += 1
            print(f"  FAIL {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        counts = {k: len(doc.get(k, {})) for k in ("parameters", "variables", "resources", "modules", "outputs")}
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        print(f"  ok   {path} ({summary})")
    print(f"{len(files) - failed} of {len(files)} Bicep files parsed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "infra"))
