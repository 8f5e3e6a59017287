"""Shared fixtures for the offline infrastructure tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
INFRA_DIR = TESTS_DIR.parent
REPO_ROOT = INFRA_DIR.parent

sys.path.insert(0, str(TESTS_DIR))
sys.path.insert(0, str(INFRA_DIR / "tools"))

import bicep_eval  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def infra_dir() -> Path:
    return INFRA_DIR


@pytest.fixture(scope="session")
def bicep_files() -> list[Path]:
    files = sorted(INFRA_DIR.rglob("*.bicep"))
    assert files, "no .bicep files found under infra/"
    return files


@pytest.fixture(scope="session")
def parsed():
    """Parsed pycep JSON per template, keyed by path relative to infra/ (e.g. 'modules/x.bicep')."""
    cache: dict[str, dict] = {}

    def get(relative: str) -> dict:
        if relative not in cache:
            cache[relative] = bicep_eval.parse_file(INFRA_DIR / relative)
        return cache[relative]

    return get


@pytest.fixture(scope="session")
def host_json() -> dict:
    return json.loads((REPO_ROOT / "host.json").read_text())


@pytest.fixture(scope="session")
def function_definitions() -> dict[str, dict]:
    """function name (folder) -> parsed function.json."""
    root = REPO_ROOT / "function-definitions"
    functions = {
        folder.name: json.loads((folder / "function.json").read_text())
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }
    assert functions, "function-definitions/ has no function folders"
    return functions
