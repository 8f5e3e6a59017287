"""Check a Functions deployment zip for the Portcullis custom handler.

The zip must contain exactly
- host.json (byte-identical to the repository's),
- the executable named by host.json's customHandler.description.defaultExecutablePath: an
  x86_64 ELF without a program interpreter (static or static-pie) and without DT_NEEDED
  libraries, stored with the executable bit,
- one folder per function in function-definitions/, with the same files, byte-identical.

Anything missing or extra is an error. Standard library only: scripts/package.sh runs it with the
system python3, infra/tests/test_package.py imports it.

Usage: python3 check_package.py --zip dist/portcullis-functions.zip \
           [--host-json host.json] [--function-definitions function-definitions]
"""

from __future__ import annotations

import argparse
import json
import posixpath
import stat
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

EM_X86_64 = 62
PT_DYNAMIC = 2
PT_INTERP = 3
DT_NULL = 0
DT_NEEDED = 1


@dataclass
class ElfInfo:
    """What the package check needs to know about an executable."""

    machine: int
    interpreter: bool
    needed: int


class NotElf(ValueError):
    """The bytes are not a 64-bit little-endian ELF file."""


def elf_info(data: bytes) -> ElfInfo:
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise NotElf("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise NotElf("not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 18)
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    interpreter = False
    needed = 0
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + 56 > len(data):
            raise NotElf("truncated program header table")
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, offset)
        if p_type == PT_INTERP:
            interpreter = True
        elif p_type == PT_DYNAMIC:
            for entry in range(p_offset, min(p_offset + p_filesz, len(data) - 15), 16):
                tag, _value = struct.unpack_from("<qQ", data, entry)
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    needed += 1
    return ElfInfo(machine=machine, interpreter=interpreter, needed=needed)


def executable_path(host_json: dict) -> str:
    try:
        path = host_json["customHandler"]["description"]["defaultExecutablePath"]
    except (KeyError, TypeError) as err:
        raise ValueError("host.json has no customHandler.description.defaultExecutablePath") from err
    normalized = posixpath.normpath(path.replace("\\", "/"))
    if not path or normalized.startswith(("/", "..")) or normalized == ".":
        raise ValueError(f"defaultExecutablePath {path!r} must be a relative path inside the app")
    return normalized


def expected_files(host_json_path: Path, function_definitions: Path) -> tuple[str, dict[str, Path]]:
    """(executable entry name, {entry name: source file}) for everything except the executable."""
    host_json = json.loads(host_json_path.read_text())
    exe = executable_path(host_json)
    files = {"host.json": host_json_path}
    folders = sorted(p for p in function_definitions.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{function_definitions} has no function folders")
    for folder in folders:
        if not (folder / "function.json").is_file():
            raise ValueError(f"{folder} has no function.json")
        for source in sorted(p for p in folder.rglob("*") if p.is_file()):
            files[f"{folder.name}/{source.relative_to(folder).as_posix()}"] = source
    if exe in files:
        raise ValueError(f"defaultExecutablePath {exe!r} collides with {files[exe]}")
    return exe, files


def check_zip(zip_path: Path, host_json_path: Path, function_definitions: Path,
              machine: int = EM_X86_64) -> list[str]:
    """All problems found; an empty list means the package is good."""
    errors: list[str] = []
    exe, files = expected_files(host_json_path, function_definitions)
    with zipfile.ZipFile(zip_path) as archive:
        infos = {}
        for info in archive.infolist():
            name = info.filename
            if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                errors.append(f"unsafe entry name {name!r}")
                continue
            if info.is_dir():
                continue
            if name in infos:
                errors.append(f"duplicate entry {name}")
            infos[name] = info

        expected = set(files) | {exe}
        for name in sorted(expected - set(infos)):
            errors.append(f"missing {name}")
        for name in sorted(set(infos) - expected):
            errors.append(f"unexpected {name}")

        for name, source in files.items():
            if name in infos and archive.read(infos[name]) != source.read_bytes():
                errors.append(f"{name} differs from {source}")

        if exe in infos:
            info = infos[exe]
            mode = info.external_attr >> 16
            if info.create_system != 3 or not stat.S_ISREG(mode) or not mode & 0o111:
                errors.append(f"{exe} is not stored as an executable file (mode {oct(mode)})")
            try:
                elf = elf_info(archive.read(info))
            except NotElf as err:
                errors.append(f"{exe}: {err}")
            else:
                if elf.machine != machine:
                    errors.append(f"{exe}: ELF machine {elf.machine}, expected {machine} (x86_64)")
                if elf.interpreter:
                    errors.append(f"{exe}: has a program interpreter (dynamically linked, not static)")
                if elf.needed:
                    errors.append(f"{exe}: needs {elf.needed} shared librar{'y' if elf.needed == 1 else 'ies'}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", required=True, type=Path)
    parser.add_argument("--host-json", type=Path, default=Path("host.json"))
    parser.add_argument("--function-definitions", type=Path, default=Path("function-definitions"))
    args = parser.parse_args(argv)
    try:
        errors = check_zip(args.zip, args.host_json, args.function_definitions)
        exe, files = expected_files(args.host_json, args.function_definitions)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        print(f"package check: {err}", file=sys.stderr)
        return 1
    for error in errors:
        print(f"  FAIL {error}")
    if errors:
        print(f"package check: {len(errors)} problem(s) in {args.zip}")
        return 1
    functions = sorted({name.split("/", 1)[0] for name in files if "/" in name})
    print(f"package check: ok ({exe} static x86_64 and executable; host.json; functions: {', '.join(functions)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
