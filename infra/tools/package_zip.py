"""Zip a Functions app folder reproducibly, keeping the executable bit.

Python's zipfile stores no Unix mode unless external_attr is set, and the Functions host on Linux
then cannot start the handler. Every entry here gets an explicit mode (0755 for executables, 0644
otherwise), a fixed timestamp and a sorted position, so the same folder gives the same zip.

Usage: python3 package_zip.py <app-dir> <zip-path>
"""

from __future__ import annotations

import os
import stat
import sys
import zipfile
from pathlib import Path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def write_zip(app_dir: Path, zip_path: Path) -> list[str]:
    """Zip every file below app_dir (no directory entries); returns the entry names."""
    names = []
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(zip_path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in app_dir.rglob("*") if p.is_file()):
            name = path.relative_to(app_dir).as_posix()
            executable = os.access(path, os.X_OK)
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.create_system = 3  # Unix, so external_attr carries the mode
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
            names.append(name)
    tmp.replace(zip_path)
    return names


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    names = write_zip(Path(argv[0]), Path(argv[1]))
    print(f"wrote {argv[1]} ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
