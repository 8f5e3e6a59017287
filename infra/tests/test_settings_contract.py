"""Cross-check: app settings in main.bicep <-> settings the handler reads.

The handler's own list is the source of truth: ``portcullis-handler --list-settings`` prints a JSON
array of ``{"name", "required", "default", "description"}``. The tests build the binary with
``cargo build --bin portcullis-handler`` (a no-op when fresh; honours ``CARGO_TARGET_DIR``) and
run it. Every test also runs against the agreed contract in fixtures/, so a template change is
checked even when the handler is not built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from bicep_eval import Evaluator

# Settings of the Functions platform itself; the handler does not read them.
PLATFORM_PREFIXES = ("AzureWebJobsStorage__", "APPLICATIONINSIGHTS_", "FUNCTIONS_", "WEBSITE_")

# Settings the handler reads that main.bicep deliberately never sets, with the reason.
NOT_SET_IN_AZURE = {
    "PORTCULLIS_QUEUE": "connection string for local runs and Azurite; in Azure the identity is used",
}

# Values for every policy knob, so that every optional setting is rendered.
ALL_KNOBS = {
    "allowlist": ["203.0.113.7/32"],
    "labRanges": ["198.51.100.0/24"],
    "minPrefixV4": "20",
    "minPrefixV6": "48",
    "maxTargets": "100",
    "ttlInformational": "PT12H",
    "ttlLow": "P2D",
    "ttlMedium": "P5D",
    "ttlHigh": "P14D",
    "maxTtl": "P60D",
    "maxBodyBytes": "1048576",
    "ipDimensions": ["SourceIP"],
    "ruleIds": ["2f1e9c4a-8b0d-4f3e-9a57-1c2d3e4f5a6b"],
    "sentinelWorkspaceId": "/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w",
    "logFormat": "text",
    "rustLog": "debug",
    "armEndpoint": "https://management.usgovcloudapi.net",
    "workbookUrl": "https://portal.azure.com/#workbook",
}

PLANS = ["FlexConsumption", "Consumption", "Dedicated"]


def _handler_binary(repo_root: Path) -> Path:
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", repo_root / "target"))
    if not target_dir.is_absolute():
        target_dir = repo_root / target_dir
    return target_dir / "debug" / "portcullis-handler"


def _validated(listed: object, source: str) -> dict[str, dict]:
    assert isinstance(listed, list) and listed, f"{source}: empty or non-array settings list"
    settings: dict[str, dict] = {}
    for entry in listed:
        assert {"name", "required", "default", "description"} <= set(entry), (source, entry)
        assert isinstance(entry["name"], str) and entry["name"], (source, entry)
        assert isinstance(entry["required"], bool), (source, entry)
        assert entry["default"] is None or isinstance(entry["default"], str), (source, entry)
        assert isinstance(entry["description"], str) and entry["description"].strip(), (source, entry)
        assert entry["name"] not in settings, f"{source}: duplicate setting {entry['name']}"
        settings[entry["name"]] = entry
    return settings


def _settings_from_binary(repo_root: Path) -> dict[str, dict]:
    # Always ask cargo: a no-op when the binary is fresh, and a stale binary would test old code.
    build = subprocess.run(["cargo", "build", "--bin", "portcullis-handler"], cwd=repo_root,
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"cargo build --bin portcullis-handler failed:\n{build.stderr[-4000:]}")
    binary = _handler_binary(repo_root)
    run = subprocess.run([str(binary), "--list-settings"], cwd=repo_root, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", "")})
    if run.returncode != 0:
        pytest.fail(f"{binary} --list-settings exited {run.returncode}; the handler must implement the "
                    f"--list-settings contract.\nstderr: {run.stderr[-2000:]}")
    try:
        listed = json.loads(run.stdout)
    except json.JSONDecodeError as err:
        pytest.fail(f"{binary} --list-settings did not print a JSON array ({err}); the handler must "
                    f"implement the --list-settings contract. stdout was {run.stdout[:300]!r}")
    return _validated(listed, str(binary))


@pytest.fixture(scope="session", params=["contract", "handler"])
def handler_settings(request, repo_root) -> dict[str, dict]:
    """Settings the handler reads.

    "contract": the agreed list (tests/fixtures/handler-settings.contract.json), so the template
    is checked against the contract even while the handler is being written.
    "handler": what the built binary prints for --list-settings; the authority.
    """
    if request.param == "contract":
        path = Path(__file__).parent / "fixtures" / "handler-settings.contract.json"
        return _validated(json.loads(path.read_text()), path.name)
    return _settings_from_binary(repo_root)


def _rendered_settings(parsed, **params) -> dict[str, str]:
    ev = Evaluator(parsed("main.bicep"), params)
    names = [s["name"] for s in ev.var("appSettings")]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {s["name"]: s["value"] for s in ev.var("appSettings")}


def _handler_side(settings: dict[str, str]) -> set[str]:
    return {n for n in settings if not n.startswith(PLATFORM_PREFIXES)}


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("knobs", [{}, ALL_KNOBS], ids=["defaults", "all-knobs"])
def test_every_setting_the_template_sets_is_read_by_the_handler(parsed, handler_settings, plan, knobs):
    rendered = _handler_side(_rendered_settings(parsed, hostingPlan=plan, **knobs))
    unknown = rendered - set(handler_settings)
    assert not unknown, f"main.bicep sets settings the handler does not read: {sorted(unknown)}"


@pytest.mark.parametrize("plan", PLANS)
def test_every_required_setting_is_set(parsed, handler_settings, plan):
    rendered = _rendered_settings(parsed, hostingPlan=plan)
    for name, entry in handler_settings.items():
        if entry["required"] and name not in NOT_SET_IN_AZURE:
            assert name in rendered, f"required setting {name} is not set by main.bicep"
    # The queue is reached with the managed identity, never with a connection string.
    assert rendered["PORTCULLIS_QUEUE__queueServiceUri"].startswith("https://")
    assert not rendered["PORTCULLIS_QUEUE__queueServiceUri"].endswith("/")
    assert "PORTCULLIS_QUEUE" not in rendered
    assert rendered["PORTCULLIS_SIGNING_KEY"].startswith("@Microsoft.KeyVault(SecretUri=https://")


def test_every_handler_setting_can_be_set_from_the_template(parsed, handler_settings):
    exposed = _handler_side(_rendered_settings(parsed, **ALL_KNOBS))
    missing = {n for n in handler_settings if n.startswith("PORTCULLIS_")} - exposed - set(NOT_SET_IN_AZURE)
    assert not missing, f"the handler reads settings main.bicep cannot set: {sorted(missing)}"


def test_documented_handler_defaults_match(parsed, handler_settings):
    """Parameter descriptions that quote a handler default must quote the real one."""
    doc = parsed("main.bicep")
    ev = Evaluator(doc, ALL_KNOBS)
    checked = 0
    for name, spec in doc["parameters"].items():
        description = next((d["argument"] for d in spec["decorators"] if d["type"] == "description"), "")
        match = re.search(r"handler default ([^)]+)\)", description)
        if not match:
            continue
        setting = re.match(r"(PORTCULLIS_[A-Z0-9_]+|RUST_LOG)", description)
        assert setting, f"{name}: description should start with the setting name"
        setting_name = setting.group(1)
        assert setting_name in handler_settings, f"{name}: {setting_name} unknown to the handler"
        assert handler_settings[setting_name]["default"] == match.group(1), (
            f"{name}: template says default {match.group(1)!r}, handler says "
            f"{handler_settings[setting_name]['default']!r}")
        rendered = {s["name"] for s in ev.var("handlerSettings")}
        assert setting_name in rendered
        checked += 1
    assert checked >= 10


def test_handler_settings_are_not_platform_names(handler_settings):
    clashes = [n for n in handler_settings if n.startswith(PLATFORM_PREFIXES)]
    # FUNCTIONS_CUSTOMHANDLER_PORT is set by the Functions host, not by the template.
    assert set(clashes) <= {"FUNCTIONS_CUSTOMHANDLER_PORT"}, clashes


def test_lab_ranges_are_described_as_a_carve_out(parsed, infra_dir):
    """Lab ranges make special-purpose addresses blockable (PORTCULLIS_LAB_RANGES: "carved back out
    of the special-purpose ranges"); docs that say the opposite send testers to an address the
    default policy always skips."""
    spec = parsed("main.bicep")["parameters"]["labRanges"]
    description = next(d["argument"] for d in spec["decorators"] if d["type"] == "description")
    assert "carved out of the never-block list" in description
    assert "not enqueued" not in description
    readme = (infra_dir / "README.md").read_text(encoding="utf-8")
    section = readme.split("### 7. Verify with a test incident", 1)[1].split("\n## ", 1)[0]
    # The test address is a documentation address: the verification must carve its range out.
    assert "203.0.113.10" in section
    assert "labRanges=\"['203.0.113.0/24']\"" in section
    assert "log but not" not in section


def test_rule_ids_include_the_portcullis_rule(parsed, infra_dir):
    """Issue 9 item 17: PORTCULLIS_RULE_IDS gets the Portcullis analytics rule's id when the Sentinel
    workspace is known, computed with the same guid() seed sentinel.bicep names the rule with."""
    workspace = "/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w"
    rendered = _rendered_settings(parsed, sentinelWorkspaceId=workspace, ruleIds=["0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"])
    ids = rendered["PORTCULLIS_RULE_IDS"].split(",")
    assert len(ids) == 2 and ids[0] == "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", ids
    sentinel = (infra_dir / "sentinel.bicep").read_text(encoding="utf-8")
    seed = re.search(r"resource analyticsRule .*?\n  name: guid\(workspace\.id, '([^']+)'\)", sentinel, re.S)
    assert seed, "sentinel.bicep: the analytics rule is no longer named guid(workspace.id, '<seed>')"
    main = (infra_dir / "main.bicep").read_text(encoding="utf-8")
    assert f"guid(sentinelWorkspaceId, '{seed.group(1)}')" in main
    # Without either parameter the setting is left out, so every alert counts.
    assert "PORTCULLIS_RULE_IDS" not in _rendered_settings(parsed)
