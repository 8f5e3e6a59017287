"""Contract checks of the return path (issue 10) between the handler, the function definitions, the
Functions host settings and the Bicep templates."""

from __future__ import annotations

import json
import re

from bicep_eval import Evaluator, Ref, kql_projected_columns

SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
PROCESSOR = "8a0f0c08-91a1-4084-bc3d-661d67233fed"
READER = "19e7f393-937e-4f77-808e-94535e297925"

EVENTS_FIXED = ["TimeGenerated", "Site", "Event", "Target", "ExpiresAt", "SourceKind", "SourceId", "Rule",
                "Reason", "ReportId", "AgentVersion", "Details"]
FIREWALL_FIXED = ["TimeGenerated", "Site", "Device", "Format", "Action", "Rule", "Interface", "Protocol",
                  "SrcIp", "SrcPort", "DstIp", "DstPort", "Count", "FirstSeen", "LastSeen"]
COLUMN_TYPES = {"string", "int", "long", "real", "boolean", "dateTime", "dynamic", "guid"}


def _columns(infra_dir, table):
    return json.loads((infra_dir / "tables" / f"{table}.columns.json").read_text())


def test_reports_function_definition(function_definitions):
    (binding,) = function_definitions["reports"]["bindings"]
    assert binding == {"type": "queueTrigger", "direction": "in", "name": "report",
                       "queueName": "%PORTCULLIS_REPORTS_QUEUE%", "connection": "PORTCULLIS_QUEUE"}
    (timer,) = function_definitions["watch"]["bindings"]
    assert timer["type"] == "timerTrigger" and timer["name"] == "timer"
    assert timer["schedule"] == "0 */5 * * * *", "every five minutes (NCRONTAB with seconds)"


def test_host_json_queue_settings(host_json):
    assert host_json["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host_json["extensionBundle"]["version"].startswith("[4.")
    queues = host_json["extensions"]["queues"]
    assert queues["messageEncoding"] == "none", "agents write JSON text, not base64"
    assert queues["maxDequeueCount"] == 5
    h, m, s = (int(x) for x in queues["maxPollingInterval"].split(":"))
    assert h * 3600 + m * 60 + s <= 2


def test_reports_queue_name_agrees_everywhere(parsed):
    main = Evaluator(parsed("main.bicep"), {})
    assert main.param("reportsQueue") == "portcullis-reports"
    settings = {s["name"]: s["value"] for s in main.var("appSettings")}
    assert settings["PORTCULLIS_REPORTS_QUEUE"] == "portcullis-reports"
    assert main.resource_body("reportsQueueResource")["name"] == "portcullis-reports"
    assert main.resource_body("reportsPoisonQueueResource")["name"] == "portcullis-reports-poison"


def test_the_logs_settings_come_from_the_rule_outputs(parsed):
    settings = {s["name"]: s["value"] for s in Evaluator(parsed("main.bicep"), {}).var("appSettings")}
    assert settings["PORTCULLIS_LOGS_ENDPOINT"] == Ref("returnPath.outputs.logsIngestionEndpoint")
    assert settings["PORTCULLIS_LOGS_RULE_ID"] == Ref("returnPath.outputs.immutableId")
    assert settings["PORTCULLIS_LOGS_STREAM"] == "Custom-PortcullisEvents"
    assert settings["PORTCULLIS_LOGS_FIREWALL_STREAM"] == "Custom-PortcullisFirewall"
    # Without a Sentinel workspace there is no incident to comment on.
    assert settings["PORTCULLIS_SENTINEL_COMMENTS"] == "false"
    ws = "/subscriptions/s/resourceGroups/sentinel-rg/providers/Microsoft.OperationalInsights/workspaces/sec"
    with_sentinel = {s["name"]: s["value"]
                     for s in Evaluator(parsed("main.bicep"), {"eventsWorkspaceId": ws, "sentinelComments": True}).var("appSettings")}
    assert with_sentinel["PORTCULLIS_SENTINEL_COMMENTS"] == "true"
    rule = parsed("modules/return-path.bicep")
    assert set(rule["outputs"]) == {"logsIngestionEndpoint", "immutableId"}


def test_queue_roles_of_the_return_path(parsed):
    doc = parsed("main.bicep")
    ev = Evaluator(doc, {"sites": ["home", "cabin"], "agentPrincipalId": "agent-home",
                         "additionalAgents": [{"site": "cabin", "principalId": "agent-cabin"}]})
    fn = Ref("funcIdentity.properties.principalId")
    for agent in ev.var("agents"):
        params = ev.module_params("agentReportsSender", agent)
        assert (params["queueName"], params["roleDefinitionGuid"], params["principalId"]) == (
            "portcullis-reports", SENDER, agent["principalId"]), "agents may only add reports"
    expected = {
        "functionReportsProcessor": ("portcullis-reports", PROCESSOR),
        "functionReportsReader": ("portcullis-reports", READER),
        "functionReportsPoisonSender": ("portcullis-reports-poison", SENDER),
        "functionReportsPoisonReader": ("portcullis-reports-poison", READER),
    }
    for module, (queue, role) in expected.items():
        params = ev.module_params(module)
        assert (params["queueName"], params["roleDefinitionGuid"], params["principalId"]) == (queue, role, fn), module
    for site in ("home", "cabin"):
        params = ev.module_params("functionPoisonReader", site)
        assert (params["queueName"], params["roleDefinitionGuid"]) == (f"{site}-poison", READER)


def test_column_files_hold_the_fixed_columns(infra_dir):
    events = _columns(infra_dir, "PortcullisEvents_CL")
    firewall = _columns(infra_dir, "PortcullisFirewall_CL")
    for columns, fixed in ((events, EVENTS_FIXED), (firewall, FIREWALL_FIXED)):
        names = [c["name"] for c in columns]
        assert names[: len(fixed)] == fixed
        assert len(names) == len(set(names))
        assert all(c["type"] in COLUMN_TYPES for c in columns), columns
        assert columns[0] == {"name": "TimeGenerated", "type": "dateTime"}
        reserved = {"_ResourceId", "id", "_SubscriptionId", "TenantId", "Type", "UniqueId", "Title"}
        assert not reserved & set(names)
    assert {"Details": "dynamic", "Healthy": "boolean", "Count": "long"}.items() <= {
        c["name"]: c["type"] for c in events}.items()


def test_the_rule_declares_both_streams_from_the_column_files(infra_dir, parsed):
    text = (infra_dir / "modules" / "return-path.bicep").read_text()
    assert "loadJsonContent('../tables/PortcullisEvents_CL.columns.json')" in text
    assert "loadJsonContent('../tables/PortcullisFirewall_CL.columns.json')" in text
    ev = Evaluator(parsed("modules/return-path.bicep"), {"workspaceName": "ws", "location": "westeurope",
                                                         "principalId": "p"})
    rule = ev.resource_body("rule")
    assert rule["kind"] == "Direct"
    props = rule["properties"]
    assert set(props["streamDeclarations"]) == {"Custom-PortcullisEvents", "Custom-PortcullisFirewall"}
    flows = {f["streams"][0]: f["outputStream"] for f in props["dataFlows"]}
    assert flows == {"Custom-PortcullisEvents": "Custom-PortcullisEvents_CL",
                     "Custom-PortcullisFirewall": "Custom-PortcullisFirewall_CL"}
    for table in ("eventsTable", "firewallTable"):
        body = ev.resource_body(table)
        assert body["properties"]["plan"] == "Analytics", "analytics rules must be able to query it"
        assert body["name"].endswith("_CL")
    publisher = ev.resource_body("publisher")["properties"]
    assert publisher["roleDefinitionId"].endswith("3913510d-42f4-4e42-8a64-420c390055eb")
    responder = ev.resource_body("responder")["properties"]
    assert responder["roleDefinitionId"].endswith("3e150937-b8fe-4cfb-8069-0eaf05ecd056")


def test_detection_queries_read_only_declared_columns(infra_dir, parsed):
    ev = Evaluator(parsed("modules/return-path-kql.bicep"), {})
    declared = {c["name"] for c in _columns(infra_dir, "PortcullisEvents_CL")}
    for output in ("siteSilent", "enforcementFailing"):
        # bicep_eval keeps the '\n' escape of join(..., '\n') as written; Azure sees newlines.
        query = ev.output(output).replace("\\n", "\n")
        assert query.startswith("PortcullisEvents_CL\n")
        used = set(re.findall(r"\b([A-Z][A-Za-z]+)\b\s*(?:==|>|<|startswith|\)|,|$)", query)) - {"PortcullisEvents_CL"}
        computed = {"LastHeartbeat", "SilentMinutes", "Events", "Reasons", "Targets", "FirstSeen", "LastSeen"}
        assert used - computed <= declared, (output, used - computed - declared)
    failing = ev.output("enforcementFailing").replace("\\n", "\n")
    assert 'not(Reason startswith "policy:")' in failing
    assert 'Event == "poison-queue" and Count > 0' in failing
    assert "Healthy == false" in failing
    assert "ago(15m)" in ev.output("siteSilent")


def test_return_path_rules_and_workbook(infra_dir, parsed):
    ev = Evaluator(parsed("modules/return-path-rules.bicep"), {"workspaceName": "ws", "location": "westeurope"})
    kql = Evaluator(parsed("modules/return-path-kql.bicep"), {})
    for name, display in (("siteSilent", "Portcullis: site silent"),
                          ("enforcementFailing", "Portcullis: enforcement failing")):
        props = ev.resource_body(name)["properties"]
        assert props["displayName"] == display
        assert props["queryFrequency"] == "PT5M"
        assert "entityMappings" not in props, "no IP entity: nothing for the handler to block"
        # Issue 9 item 15: at most 3 {{column}} placeholders per format, each a projected column.
        columns = kql_projected_columns(kql.output(name).replace("\\n", "\n"))
        for field, text in props["alertDetailsOverride"].items():
            placeholders = re.findall(r"\{\{([^{}]*)\}\}", text)
            assert len(placeholders) <= 3, (name, field, text)
            assert set(placeholders) <= set(columns), (name, field, placeholders, columns)
    workbook = ev.resource_body("workbook")
    assert workbook["properties"]["category"] == "sentinel"
    data = json.loads((infra_dir / "workbook" / "portcullis.workbook.json").read_text())
    queries = [i["content"]["query"] for i in data["items"] if i["type"] == 3]
    assert len(queries) >= 5 and all("PortcullisEvents_CL" in q for q in queries)
    sentinel = parsed("sentinel.bicep")
    assert sentinel["modules"]["returnPathRules"]["detail"]["path"] == "modules/return-path-rules.bicep"
    monitor = parsed("monitor.bicep")
    assert monitor["modules"]["returnPathAlerts"]["detail"]["path"] == "modules/return-path-alerts.bicep"


def test_diagnostic_settings(parsed):
    main = Evaluator(parsed("main.bicep"), {})
    logs = main.resource_body("functionAppDiagnostics")["properties"]["logs"]
    assert logs == [{"category": "FunctionAppLogs", "enabled": True}]
    playbook = Evaluator(parsed("modules/forwarder-playbook.bicep"),
                         {"name": "p", "location": "l", "alertsUrl": "u", "functionKey": "k",
                          "diagnosticsWorkspaceId": "/ws"})
    assert playbook.resource_body("playbookDiagnostics")["properties"]["logs"] == [
        {"category": "WorkflowRuntime", "enabled": True}]
