"""The deployment package: scripts/package.sh layout and infra/tools/check_package.py.

The real static build needs the musl toolchain and a few minutes, so `make package` does it; here
package.sh runs with PORTCULLIS_HANDLER_BINARY pointing at small hand-made ELF files, which
exercises everything after the build (assembly, zip, checks) on the real host.json and
function-definitions/.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import check_package
import package_zip

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3


def fake_elf(*, interpreter: bool = False, needed: int = 0, machine: int = 62) -> bytes:
    """A minimal ELF64 header plus program headers (enough for check_package, not for running)."""
    headers = [(PT_LOAD, 0, 0)]
    dynamic = b""
    if interpreter:
        headers.append((PT_INTERP, 0, 0))
    if needed:
        dynamic = b"".join(struct.pack("<qQ", 1, i) for i in range(needed)) + struct.pack("<qQ", 0, 0)
    if dynamic or not interpreter:
        headers.append((PT_DYNAMIC, 0, len(dynamic)))  # static-pie binaries have PT_DYNAMIC too
    phoff = 64
    dyn_offset = phoff + 56 * len(headers)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, phoff, 0, 0, 64, 56, len(headers), 0, 0, 0)
    table = b""
    for p_type, _, size in headers:
        offset = dyn_offset if p_type == PT_DYNAMIC else 0
        table += struct.pack("<IIQQQQQQ", p_type, 5, offset, 0, 0, size, size, 8)
    return header + table + dynamic


@pytest.fixture
def make_binary(tmp_path):
    def make(name: str = "handler", **kwargs) -> Path:
        path = tmp_path / name
        path.write_bytes(fake_elf(**kwargs))
        path.chmod(0o755)
        return path
    return make


def run_package(repo_root: Path, binary: Path, dist: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PORTCULLIS_HANDLER_BINARY": str(binary), "DIST_DIR": str(dist),
           "PYTHON": sys.executable}
    return subprocess.run(["bash", str(repo_root / "scripts" / "package.sh")], cwd=repo_root, env=env,
                          capture_output=True, text=True)


# ---- ELF reading -------------------------------------------------------------------------------


def test_elf_reader_on_fake_binaries():
    assert check_package.elf_info(fake_elf()) == check_package.ElfInfo(62, False, 0)
    assert check_package.elf_info(fake_elf(interpreter=True)).interpreter is True
    assert check_package.elf_info(fake_elf(needed=2)).needed == 2
    with pytest.raises(check_package.NotElf):
        check_package.elf_info(b"#!/bin/sh\necho hi\n" + bytes(64))


def test_elf_reader_sees_interpreter_of_a_real_dynamic_binary():
    # The Python running the tests is an ordinary dynamically linked executable.
    data = Path(os.path.realpath(sys.executable)).read_bytes()
    info = check_package.elf_info(data)
    assert info.machine == 62 or sys.maxsize < 2**32 or os.uname().machine != "x86_64"
    assert info.interpreter is True
    assert info.needed >= 1


# ---- package.sh end to end (build skipped) -----------------------------------------------------


def test_package_contains_exactly_what_host_json_references(repo_root, host_json, function_definitions,
                                                             make_binary, tmp_path):
    dist = tmp_path / "dist"
    result = run_package(repo_root, make_binary(), dist)
    assert result.returncode == 0, result.stdout + result.stderr
    archive = zipfile.ZipFile(dist / "portcullis-functions.zip")
    exe = host_json["customHandler"]["description"]["defaultExecutablePath"]
    expected = {"host.json", exe} | {f"{name}/function.json" for name in function_definitions}
    assert {i.filename for i in archive.infolist()} == expected
    mode = archive.getinfo(exe).external_attr >> 16
    assert stat.S_ISREG(mode) and mode & 0o777 == 0o755
    assert json.loads(archive.read("host.json")) == host_json
    for name, definition in function_definitions.items():
        assert json.loads(archive.read(f"{name}/function.json")) == definition
    # The unzipped app folder is left for `func azure functionapp publish`.
    assert (dist / "app" / exe).stat().st_mode & 0o111
    assert "package check: ok" in result.stdout


def test_package_is_reproducible(repo_root, make_binary, tmp_path):
    binary = make_binary()
    digests = []
    for run in ("a", "b"):
        dist = tmp_path / run
        assert run_package(repo_root, binary, dist).returncode == 0
        digests.append((dist / "portcullis-functions.zip").read_bytes())
    assert digests[0] == digests[1]


@pytest.mark.parametrize("kwargs,message", [
    ({"interpreter": True}, "program interpreter"),
    ({"needed": 1}, "shared librar"),
    ({"machine": 183}, "ELF machine 183"),
])
def test_package_rejects_binaries_that_would_not_run(repo_root, make_binary, tmp_path, kwargs, message):
    result = run_package(repo_root, make_binary(**kwargs), tmp_path / "dist")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_package_rejects_a_script_instead_of_a_binary(repo_root, tmp_path):
    script = tmp_path / "handler"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    result = run_package(repo_root, script, tmp_path / "dist")
    assert result.returncode != 0
    assert "not an ELF file" in result.stdout + result.stderr


# ---- check_zip on hand-broken packages -----------------------------------------------------------


@pytest.fixture
def good_app(repo_root, host_json, tmp_path, make_binary):
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(repo_root / "host.json", app / "host.json")
    exe = app / host_json["customHandler"]["description"]["defaultExecutablePath"]
    shutil.copy(make_binary(), exe)
    exe.chmod(0o755)
    for folder in (repo_root / "function-definitions").iterdir():
        shutil.copytree(folder, app / folder.name)
    return app


def check(repo_root: Path, app: Path, tmp_path: Path) -> list[str]:
    zip_path = tmp_path / "out.zip"
    package_zip.write_zip(app, zip_path)
    return check_package.check_zip(zip_path, repo_root / "host.json", repo_root / "function-definitions")


def test_good_app_passes(repo_root, good_app, tmp_path):
    assert check(repo_root, good_app, tmp_path) == []


def test_extra_file_is_rejected(repo_root, good_app, tmp_path):
    (good_app / "local.settings.json").write_text("{}")
    assert check(repo_root, good_app, tmp_path) == ["unexpected local.settings.json"]


def test_missing_function_folder_is_rejected(repo_root, good_app, tmp_path):
    shutil.rmtree(good_app / "blocks")
    assert check(repo_root, good_app, tmp_path) == ["missing blocks/function.json"]


def test_non_executable_binary_is_rejected(repo_root, good_app, host_json, tmp_path):
    exe = good_app / host_json["customHandler"]["description"]["defaultExecutablePath"]
    exe.chmod(0o644)
    errors = check(repo_root, good_app, tmp_path)
    assert len(errors) == 1 and "not stored as an executable" in errors[0]


def test_changed_function_json_is_rejected(repo_root, good_app, tmp_path):
    path = good_app / "alerts" / "function.json"
    path.write_text(path.read_text().replace('"alerts"', '"other"'))
    assert check(repo_root, good_app, tmp_path) == [
        f"alerts/function.json differs from {repo_root / 'function-definitions' / 'alerts' / 'function.json'}"
    ]


def test_executable_path_must_stay_inside_the_app():
    with pytest.raises(ValueError):
        check_package.executable_path({"customHandler": {"description": {"defaultExecutablePath": "../x"}}})
    with pytest.raises(ValueError):
        check_package.executable_path({"customHandler": {"description": {"defaultExecutablePath": "/usr/bin/x"}}})
    assert check_package.executable_path(
        {"customHandler": {"description": {"defaultExecutablePath": "bin/./handler"}}}) == "bin/handler"
