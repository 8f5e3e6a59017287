"""Compare a checkov JSON report with infra/checkov-waivers.yaml.

Fails (exit 1) when
- checkov reports a parsing error (a file it could not read was not scanned),
- a check failed that no waiver covers,
- a waiver matches no failed check (stale waivers hide future regressions),
- the report scanned no Bicep resource at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def _reports(raw: object) -> list[dict]:
    if isinstance(raw, list):
        return [r for r in raw if isinstance(r, dict)]
    if isinstance(raw, dict):
        return [raw]
    return []


def main(report_path: str, waivers_path: str) -> int:
    text = Path(report_path).read_text()
    if not text.strip():
        print("checkov produced no report", file=sys.stderr)
        return 1
    reports = _reports(json.loads(text))
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    if not bicep:
        print("checkov report has no bicep section (nothing scanned?)", file=sys.stderr)
        return 1
    waivers = yaml.safe_load(Path(waivers_path).read_text())["waivers"]
    waived = {(w["check"], w["file"], w["resource"]): w for w in waivers}

    failed: list[tuple[str, str, str, str]] = []
    passed = parsing_errors = resources = 0
    for report in bicep:
        summary = report.get("summary", {})
        passed += summary.get("passed", 0)
        parsing_errors += summary.get("parsing_errors", 0)
        resources += summary.get("resource_count", 0)
        for check in report.get("results", {}).get("failed_checks", []):
            failed.append((check["check_id"], check["file_path"], check["resource"], check.get("check_name", "")))

    errors = 0
    if parsing_errors:
        print(f"  checkov could not parse {parsing_errors} file(s)")
        errors += 1
    if not resources:
        print("  checkov scanned 0 resources")
        errors += 1

    used = set()
    for check_id, file_path, resource, name in sorted(failed):
        key = (check_id, file_path, resource)
        if key in waived:
            used.add(key)
            print(f"  waived  {check_id} {resource} ({file_path})")
        else:
            errors += 1
            print(f"  FAILED  {check_id} {resource} ({file_path}): {name}")
    for key in sorted(set(waived) - used):
        errors += 1
        print(f"  STALE   waiver {key[0]} {key[2]} ({key[1]}) matches no failed check; remove it")

    print(f"checkov: {passed} passed, {len(failed)} failed ({len(used)} waived), "
          f"{resources} resources, {parsing_errors} parsing errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
