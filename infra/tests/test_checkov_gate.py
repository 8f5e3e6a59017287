"""infra/tools/checkov_gate.py decides whether the security scan passes; test its rules."""

from __future__ import annotations

import json

import pytest

import checkov_gate

WAIVERS = """
waivers:
  - check: CKV_AZURE_35
    file: /main.bicep
    resource: Microsoft.Storage/storageAccounts.queueAccount
    reason: the agent connects from a dynamic home address, so no firewall rule fits
"""


def report(failed, parsing_errors=0, resources=10):
    return {
        "check_type": "bicep",
        "summary": {"passed": 3, "failed": len(failed), "parsing_errors": parsing_errors,
                    "resource_count": resources},
        "results": {"failed_checks": [
            {"check_id": c, "file_path": f, "resource": r, "check_name": "name"} for c, f, r in failed
        ]},
    }


@pytest.fixture
def gate(tmp_path):
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(WAIVERS)

    def run(raw) -> int:
        path = tmp_path / "report.json"
        path.write_text(json.dumps(raw))
        return checkov_gate.main(str(path), str(waivers))

    return run


WAIVED = ("CKV_AZURE_35", "/main.bicep", "Microsoft.Storage/storageAccounts.queueAccount")


def test_all_failures_waived_passes(gate):
    assert gate(report([WAIVED])) == 0
    assert gate([report([WAIVED]), {"check_type": "secrets", "results": {}}]) == 0


def test_unwaived_failure_fails(gate):
    assert gate(report([WAIVED, ("CKV_AZURE_3", "/main.bicep", "Microsoft.Storage/storageAccounts.x")])) == 1


def test_waiver_for_another_resource_does_not_cover(gate):
    assert gate(report([("CKV_AZURE_35", "/main.bicep", "Microsoft.Storage/storageAccounts.hostAccount")])) == 1


def test_stale_waiver_fails(gate):
    assert gate(report([])) == 1


def test_parsing_errors_and_empty_scans_fail(gate):
    assert gate(report([WAIVED], parsing_errors=1)) == 1
    assert gate(report([WAIVED], resources=0)) == 1
    assert gate({"check_type": "terraform"}) == 1
