"""Structure and contract checks on the Bicep templates, evaluated offline with bicep_eval."""

from __future__ import annotations

import re

import pytest
import yaml

import bicep_eval
from bicep_eval import Evaluator, Ref, kql_projected_columns

ROLE_GUIDS = {
    # Built-in role definitions (identical in every tenant). Checked against Microsoft's built-in
    # role list; a typo here would grant nothing (or something else) in Azure.
    "storageQueueDataMessageSender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "storageQueueDataMessageProcessor": "8a0f0c08-91a1-4084-bc3d-661d67233fed",
    "storageQueueDataReader": "19e7f393-937e-4f77-808e-94535e297925",
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "microsoftSentinelAutomationContributor": "f4c81013-99ee-4d62-a7ee-b3f1f648599a",
}

TEMPLATES = ["main.bicep", "sentinel.bicep", "monitor.bicep"]


# ---- parsing -----------------------------------------------------------------------------------


def test_every_bicep_file_parses(bicep_files):
    for path in bicep_files:
        doc = bicep_eval.parse_file(path)
        assert doc.get("resources") or doc.get("outputs"), f"{path} parsed to nothing"


def test_bicepparam_uses_main_and_only_declared_parameters(infra_dir, parsed):
    text = (infra_dir / "main.bicepparam").read_text()
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    assert re.search(r"^using\s+'\./main\.bicep'\s*$", code, flags=re.MULTILINE)
    declared = set(parsed("main.bicep")["parameters"])
    assigned = re.findall(r"^param\s+(\w+)\s*=", code, flags=re.MULTILINE)
    assert assigned, "main.bicepparam assigns no parameter"
    assert set(assigned) <= declared, sorted(set(assigned) - declared)
    # Parameters without a default must be given in the example.
    required = {n for n, p in parsed("main.bicep")["parameters"].items() if "default" not in p}
    assert required <= set(assigned), sorted(required - set(assigned))


def test_every_parameter_is_documented(parsed, bicep_files, infra_dir):
    for path in bicep_files:
        doc = parsed(str(path.relative_to(infra_dir)))
        for name, spec in doc.get("parameters", {}).items():
            kinds = {d["type"] for d in spec.get("decorators", [])}
            assert "description" in kinds, f"{path.name}: parameter {name} has no @description"


# ---- main.bicep --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["abc", "portcullis", "a1b2c3d4e5"])
def test_storage_account_names_are_valid(parsed, prefix):
    ev = Evaluator(parsed("main.bicep"), {"namePrefix": prefix})
    for var in ("queueAccountName", "hostAccountName"):
        name = ev.var(var)
        assert re.fullmatch(r"[a-z0-9]{3,24}", name), (var, name)
    assert ev.var("queueAccountName") != ev.var("hostAccountName")
    vault = ev.var("keyVaultName")
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", vault), vault
    assert "--" not in vault


def test_prefix_bounds_match_storage_rules(parsed):
    spec = parsed("main.bicep")["parameters"]["namePrefix"]
    bounds = {d["type"]: d["argument"] for d in spec["decorators"] if d["type"] in ("min_length", "max_length")}
    # <prefix> + 'q' + 13 characters must fit in 24.
    assert int(bounds["max_length"]) + 1 + 13 <= 24


@pytest.mark.parametrize("sites", [["portcullis"], ["home", "cabin"]])
def test_one_queue_and_one_poison_queue_per_site(parsed, sites):
    doc = parsed("main.bicep")
    site_loop = doc["resources"]["siteQueues"]["config"]
    poison_loop = doc["resources"]["poisonQueues"]["config"]
    assert site_loop["loop_type"]["detail"]["array_name"] == "sites"
    assert poison_loop["loop_type"]["detail"]["array_name"] == "sites"
    ev = Evaluator(doc, {"sites": sites})
    names = [ev.eval(site_loop["config"]["name"], {"site": s}) for s in sites]
    poison = [ev.eval(poison_loop["config"]["name"], {"site": s}) for s in sites]
    assert names == sites
    assert poison == [f"{s}-poison" for s in sites]
    assert ev.var("handlerSettings")[3] == {"name": "PORTCULLIS_QUEUES", "value": ",".join(sites)}


def test_role_definition_guids(parsed):
    for template in ("main.bicep", "sentinel.bicep"):
        roles = Evaluator(parsed(template)).var("roles")
        for name, guid in roles.items():
            assert ROLE_GUIDS[name] == guid, f"{template}: role {name}"


def test_function_identity_sends_to_site_queues_only(parsed):
    doc = parsed("main.bicep")
    ev = Evaluator(doc, {"sites": ["home", "cabin"]})
    module = doc["modules"]["functionQueueSender"]["config"]
    assert module["loop_type"]["detail"]["array_name"] == "sites"
    for site in ("home", "cabin"):
        params = ev.module_params("functionQueueSender", site)
        assert params["queueName"] == site
        assert params["roleDefinitionGuid"] == ROLE_GUIDS["storageQueueDataMessageSender"]
        assert params["principalId"] == Ref("funcIdentity.properties.principalId")
    # No other module or resource gives the function identity a queue role.
    queue_modules = [m for m, spec in doc["modules"].items() if spec["detail"]["path"] == "modules/queue-role.bicep"]
    # The return path's queue roles (reports queue, poison queues) are checked in test_return_path.py.
    assert sorted(queue_modules) == [
        "agentPoisonSender", "agentQueueProcessor", "agentReportsSender", "functionPoisonReader",
        "functionQueueSender", "functionReportsPoisonReader", "functionReportsPoisonSender",
        "functionReportsProcessor", "functionReportsReader",
    ]



def test_agent_gets_processor_on_its_queue_and_sender_on_its_poison_queue(parsed):
    doc = parsed("main.bicep")
    ev = Evaluator(doc, {
        "sites": ["home", "cabin"],
        "agentPrincipalId": "agent-home",
        "additionalAgents": [{"site": "cabin", "principalId": "agent-cabin"}],
    })
    agents = ev.var("agents")
    assert agents == [
        {"site": "home", "principalId": "agent-home"},
        {"site": "cabin", "principalId": "agent-cabin"},
    ]
    for agent in agents:
        processor = ev.module_params("agentQueueProcessor", agent)
        assert processor["queueName"] == agent["site"]
        assert processor["principalId"] == agent["principalId"]
        assert processor["roleDefinitionGuid"] == ROLE_GUIDS["storageQueueDataMessageProcessor"]
        poison = ev.module_params("agentPoisonSender", agent)
        assert poison["queueName"] == f"{agent['site']}-poison"
        assert poison["roleDefinitionGuid"] == ROLE_GUIDS["storageQueueDataMessageSender"]
    # Without an agent principal there is no agent assignment at all.
    assert Evaluator(doc).var("agents") == []
    assert Evaluator(doc, {"agentPrincipalId": "x", "agentSite": "b", "sites": ["a", "b"]}).var("agents") == [
        {"site": "b", "principalId": "x"}
    ]


def test_queue_role_module_scopes_assignment_to_the_queue(parsed):
    doc = parsed("modules/queue-role.bicep")
    assignment = doc["resources"]["assignment"]["config"]
    assert assignment["scope"] == "queue"
    queue = doc["resources"]["queue"]
    assert queue["existing"] and queue["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"


@pytest.mark.parametrize("enable_sas", [False, True])
def test_storage_accounts_are_locked_down(parsed, enable_sas):
    ev = Evaluator(parsed("main.bicep"), {"enableAgentSas": enable_sas})
    for name in ("queueAccount", "hostAccount"):
        props = ev.resource_body(name)["properties"]
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["supportsHttpsTrafficOnly"] is True
        assert props["allowBlobPublicAccess"] is False
        assert props["defaultToOAuthAuthentication"] is True
    assert ev.resource_body("hostAccount")["properties"]["allowSharedKeyAccess"] is False
    assert ev.resource_body("queueAccount")["properties"]["allowSharedKeyAccess"] is enable_sas


def test_shared_key_is_off_by_default(parsed):
    spec = parsed("main.bicep")["parameters"]["enableAgentSas"]
    assert spec["default"] is False


def test_key_vault_is_rbac_with_purge_protection(parsed):
    props = Evaluator(parsed("main.bicep")).resource_body("vault")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enabledForTemplateDeployment"] is True  # getSecret() in sentinel/monitor.bicep


def test_key_vault_secrets_have_content_type(parsed, bicep_files, infra_dir):
    """Covers what checkov misses for conditional resources (see checkov-waivers.yaml)."""
    seen = 0
    for path in bicep_files:
        doc = parsed(str(path.relative_to(infra_dir)))
        for name, spec in doc.get("resources", {}).items():
            if spec["type"] == "Microsoft.KeyVault/vaults/secrets" and not spec["existing"]:
                body = Evaluator(doc, {"signingKey": "x"} if "signingKey" in doc["parameters"] else {}).resource_body(name)
                assert body["properties"].get("contentType"), f"{path.name}: {name}"
                seen += 1
    assert seen >= 1


def test_signing_secret_only_written_when_given(parsed):
    doc = parsed("main.bicep")
    assert Evaluator(doc).resource_condition("signingSecret") is False
    assert Evaluator(doc, {"signingKey": "c2VjcmV0"}).resource_condition("signingSecret") is True
    assert doc["parameters"]["signingKey"]["decorators"][-1]["type"] == "secure" or any(
        d["type"] == "secure" for d in doc["parameters"]["signingKey"]["decorators"]
    )


def test_function_app_basics(parsed):
    ev = Evaluator(parsed("main.bicep"))
    body = ev.resource_body("functionApp")
    assert body["kind"] == "functionapp,linux"
    props = body["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == Ref("funcIdentity.id")
    site = props["siteConfig"]
    assert site["minTlsVersion"] == "1.2"
    assert site["ftpsState"] == "Disabled"
    for policy in ("scmBasicAuth", "ftpBasicAuth"):
        assert ev.resource_body(policy)["properties"]["allow"] is False


def test_flex_runtime_is_custom(parsed):
    ev = Evaluator(parsed("main.bicep"), {"hostingPlan": "FlexConsumption"})
    body = ev.resource_body("functionApp")
    config = body["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "custom", "version": "1.0"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert ev.resource_body("plan")["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    names = {s["name"] for s in body["properties"]["siteConfig"]["appSettings"]}
    # Flex rejects these; the runtime comes from functionAppConfig instead.
    assert not names & {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"}


@pytest.mark.parametrize("plan,sku", [("Consumption", "Y1"), ("Dedicated", "B1")])
def test_classic_plans_use_custom_worker_runtime(parsed, plan, sku):
    ev = Evaluator(parsed("main.bicep"), {"hostingPlan": plan})
    body = ev.resource_body("functionApp")
    assert body["properties"]["functionAppConfig"] is None
    settings = {s["name"]: s["value"] for s in body["properties"]["siteConfig"]["appSettings"]}
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "custom"
    assert settings["FUNCTIONS_EXTENSION_VERSION"] == "~4"
    assert ev.resource_body("plan")["sku"]["name"] == sku
    if plan == "Consumption":
        # primaryEndpoints.blob ends with '/' in Azure.
        assert settings["WEBSITE_RUN_FROM_PACKAGE"] == (
            "<hostAccount.properties.primaryEndpoints.blob>app-package/portcullis-functions.zip")
        assert settings["WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID"] == Ref("funcIdentity.id")
    else:
        assert "WEBSITE_RUN_FROM_PACKAGE" not in settings


def test_host_storage_is_identity_based(parsed):
    ev = Evaluator(parsed("main.bicep"))
    settings = {s["name"]: s["value"] for s in ev.var("appSettings")}
    assert "AzureWebJobsStorage" not in settings  # no connection string
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__accountName"] == ev.var("hostAccountName")
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].endswith("Authorization=AAD")


# ---- KQL, entity mapping, custom details ---------------------------------------------------


def _rendered_rule(parsed, params):
    sentinel = parsed("sentinel.bicep")
    base = {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv"}
    ev = Evaluator(sentinel, {**base, **params})
    module_params = ev.module_params("tiQuery")
    query = Evaluator(parsed("modules/ti-ip-match-query.bicep"), module_params).output("query")
    body = ev.resource_body("analyticsRule")
    assert body["properties"]["query"] == Ref("tiQuery.outputs.query")
    return query, body["properties"]


RULE_VARIANTS = [
    {},
    {"blockFor": "P7D"},
    {"firewallTable": "AzureFirewall", "sourceIpColumn": "SourceIp", "useLegacyThreatIntelTable": True},
    {"firewallTable": "CommonSecurityLog", "sourceIpColumn": "SourceIP"},
    {"firewallTable": "Syslog_Firewall_CL", "sourceIpColumn": "src_ip_s", "ruleFrequencyHours": 6,
     "indicatorLookbackDays": 7, "blockFor": "PT12H"},
]


@pytest.mark.parametrize("params", RULE_VARIANTS)
def test_analytics_rule_kql_projects_mapped_columns(parsed, params):
    query, props = _rendered_rule(parsed, params)
    assert "__" not in query.replace("__queueServiceUri", ""), "unreplaced placeholder in KQL"
    columns = kql_projected_columns(query)
    mapped = [f["columnName"] for m in props["entityMappings"] for f in m["fieldMappings"]]
    assert mapped == [params.get("sourceIpColumn", "SrcIp")]
    assert props["entityMappings"][0]["entityType"] == "IP"
    assert props["entityMappings"][0]["fieldMappings"][0]["identifier"] == "Address"
    for column in mapped + list(props["customDetails"].values()):
        assert column in columns, (column, columns)
    table = params.get("firewallTable", "PortcullisFirewall_CL")
    assert re.search(rf"^\s*{re.escape(table)}\s*$", query, flags=re.MULTILINE)
    legacy = params.get("useLegacyThreatIntelTable", False)
    assert ("ThreatIntelligenceIndicator" in query) is legacy
    assert ("ThreatIntelIndicators" in query) is (not legacy)
    hours = params.get("ruleFrequencyHours", 1)
    assert f"ago({hours}h)" in query
    assert props["queryFrequency"] == f"PT{hours}H"
    assert props["queryPeriod"] == f"P{params.get('indicatorLookbackDays', 14)}D"


@pytest.mark.parametrize("params", RULE_VARIANTS)
def test_custom_details_carry_validity_and_optional_block_for(parsed, params):
    query, props = _rendered_rule(parsed, params)
    details = props["customDetails"]
    assert details["PortcullisValidUntil"] == "ValidUntil"
    if params.get("blockFor"):
        assert details["PortcullisBlockFor"] == "BlockFor"
        assert f'BlockFor = "{params["blockFor"]}"' in query
    else:
        assert "PortcullisBlockFor" not in details
    assert set(details) <= {"PortcullisValidUntil", "PortcullisBlockFor"}


def test_analytics_rule_creates_incidents(parsed):
    _, props = _rendered_rule(parsed, {})
    assert props["incidentConfiguration"]["createIncident"] is True
    assert props["eventGroupingSettings"]["aggregationKind"] == "AlertPerResult"
    assert "{{SrcIp}}" in props["alertDetailsOverride"]["alertDisplayNameFormat"]


@pytest.mark.parametrize("params", RULE_VARIANTS)
def test_alert_details_overrides_have_at_most_three_placeholders(parsed, bicep_files, infra_dir, params):
    """Issue 9 item 15: Sentinel accepts at most 3 {{column}} placeholders in each alertDetailsOverride
    format; the description had 4 and the whole sentinel.bicep deployment failed. Every placeholder must
    also name a column the query projects."""
    query, props = _rendered_rule(parsed, params)
    columns = kql_projected_columns(query)
    overrides = props["alertDetailsOverride"]
    assert overrides, "the rule has no alertDetailsOverride"
    for field, text in overrides.items():
        if not isinstance(text, str):
            continue
        placeholders = re.findall(r"\{\{([^{}]*)\}\}", text)
        assert len(placeholders) <= 3, f"{field} has {len(placeholders)} placeholders: {text}"
        for column in placeholders:
            assert column in columns, (field, column, columns)
    # No other template may carry an override this test does not see (the return path's rules are checked
    # the same way in test_return_path.py).
    for path in bicep_files:
        if path.name not in ("sentinel.bicep", "return-path-rules.bicep"):
            assert "alertDetailsOverride" not in path.read_text(encoding="utf-8"), path


def test_monitor_uses_the_ga_scheduled_query_rules_api(parsed):
    """Issue 9 item 18: the log search alert used the 2023-03-15-preview api-version."""
    resource = parsed("monitor.bicep")["resources"]["logAlert"]
    assert (resource["type"], resource["api_version"]) == ("Microsoft.Insights/scheduledQueryRules", "2023-12-01")


def test_playbook_identity_gets_no_sentinel_role(infra_dir):
    """Issue 9 item 18: a trigger-only playbook needs no Sentinel role; the Reader grant is gone."""
    sentinel = (infra_dir / "sentinel.bicep").read_text(encoding="utf-8")
    assert "forwarder.outputs.principalId" not in sentinel
    assert "8d289c81-5878-46d4-8554-54e1e3d8b5cb" not in sentinel


def test_legacy_ti_table_dates(bicep_files, infra_dir):
    """Issue 9 item 18: the legacy table's ingestion ended on 31 August 2025, retirement 31 May 2026."""
    texts = [p.read_text(encoding="utf-8") for p in bicep_files]
    texts.append((infra_dir / "README.md").read_text(encoding="utf-8"))
    joined = "\n".join(texts)
    assert "July 2025" not in joined
    assert "31 August 2025" in joined and "31 May 2026" in joined


def test_monitor_alert_splits_by_ip_column(parsed):
    monitor = parsed("monitor.bicep")
    for params in ({}, {"sourceIpColumn": "src_ip_s", "firewallTable": "Fw_CL", "evaluationFrequency": "PT15M"}):
        ev = Evaluator(monitor, {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv", **params})
        query = Evaluator(parsed("modules/ti-ip-match-query.bicep"), ev.module_params("tiQuery")).output("query")
        column = params.get("sourceIpColumn", "SrcIp")
        criteria = ev.resource_body("logAlert")["properties"]["criteria"]["allOf"][0]
        assert criteria["dimensions"] == [{"name": column, "operator": "Include", "values": ["*"]}]
        assert column in kql_projected_columns(query)
        assert "__" not in query


def test_monitor_action_group_uses_common_schema_and_alerts_route(parsed):
    ev = Evaluator(parsed("monitor.bicep"), {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv"})
    params = ev.module_params("actionGroup")
    assert params["alertsUrl"] == "https://<functionApp.properties.defaultHostName>/api/alerts"
    assert params["functionKey"] == Ref("vault.getSecret(portcullis-alerts-function-key)")
    group = Evaluator(parsed("modules/alerts-action-group.bicep"), {"name": "g", "alertsUrl": "https://h/api/alerts",
                                                                    "functionKey": "k"})
    receivers = group.resource_body("actionGroup")["properties"]["webhookReceivers"]
    assert receivers == [{"name": "portcullis-alerts", "serviceUri": "https://h/api/alerts?code=k",
                          "useCommonAlertSchema": True, "useAadAuth": False}]


# ---- playbook and automation rules ---------------------------------------------------------


def test_forwarder_is_trigger_plus_one_http_post(parsed):
    ev = Evaluator(parsed("modules/forwarder-playbook.bicep"),
                   {"name": "p", "location": "westeurope", "alertsUrl": "https://h/api/alerts", "functionKey": "k"})
    body = ev.resource_body("playbook")
    definition = body["properties"]["definition"]
    assert list(definition["triggers"]) == ["Microsoft_Sentinel_incident"]
    trigger = definition["triggers"]["Microsoft_Sentinel_incident"]
    assert trigger["type"] == "ApiConnectionWebhook"
    assert trigger["inputs"]["path"] == "/incident-creation"
    assert len(definition["actions"]) == 1
    action = next(iter(definition["actions"].values()))
    assert action["type"] == "Http"
    inputs = action["inputs"]
    assert inputs["method"] == "POST"
    assert inputs["body"] == "@triggerBody()"
    assert inputs["uri"] == "@parameters('alertsUrl')"
    assert inputs["headers"]["x-functions-key"] == "@parameters('functionKey')"
    assert inputs["retryPolicy"]["type"] == "exponential" and inputs["retryPolicy"]["count"] >= 1
    assert action["runtimeConfiguration"]["secureData"]["properties"] == ["inputs"]
    assert definition["parameters"]["functionKey"]["type"] == "SecureString"
    params = body["properties"]["parameters"]
    assert params["functionKey"] == {"value": "k"}
    assert params["alertsUrl"] == {"value": "https://h/api/alerts"}
    assert params["$connections"]["value"]["azuresentinel"]["connectionProperties"]["authentication"] == {
        "type": "ManagedServiceIdentity"}
    assert any(d["type"] == "secure" for d in ev.doc["parameters"]["functionKey"]["decorators"])


def test_sentinel_passes_function_key_from_key_vault(parsed):
    ev = Evaluator(parsed("sentinel.bicep"), {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv"})
    params = ev.module_params("forwarder")
    assert params["functionKey"] == Ref("vault.getSecret(portcullis-alerts-function-key)")
    assert params["alertsUrl"] == "https://<functionApp.properties.defaultHostName>/api/alerts"


def test_automation_rules_block_on_create_and_forward_closures(parsed):
    ev = Evaluator(parsed("sentinel.bicep"), {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv"})
    create = ev.resource_body("blockOnCreate")["properties"]
    close = ev.resource_body("forwardOnClose")["properties"]
    rule_condition = {
        "conditionType": "Property",
        "conditionProperties": {"propertyName": "IncidentRelatedAnalyticRuleIds", "operator": "Contains",
                                "propertyValues": [Ref("analyticsRule.id")]},
    }
    run = [{"order": 1, "actionType": "RunPlaybook",
            "actionConfiguration": {"logicAppResourceId": Ref("forwarder.outputs.playbookId"),
                                    "tenantId": "11111111-1111-1111-1111-111111111111"}}]
    assert create["triggeringLogic"]["triggersOn"] == "Incidents"
    assert create["triggeringLogic"]["triggersWhen"] == "Created"
    assert create["triggeringLogic"]["conditions"] == [rule_condition]
    assert create["actions"] == run
    assert close["triggeringLogic"]["triggersWhen"] == "Updated"
    assert close["triggeringLogic"]["conditions"][0] == rule_condition
    status = close["triggeringLogic"]["conditions"][1]
    assert status["conditionType"] == "PropertyChanged"
    assert status["conditionProperties"] == {"propertyName": "IncidentStatus", "changeType": "ChangedTo",
                                             "operator": "Equals", "propertyValues": ["Closed"]}
    assert close["actions"] == run
    assert create["order"] != close["order"]


# ---- routes ------------------------------------------------------------------------------------


def test_routes_in_templates_match_function_definitions(parsed, function_definitions, host_json):
    assert host_json["extensions"]["http"]["routePrefix"] == "api"
    routes = {}
    for name, definition in function_definitions.items():
        trigger = next((b for b in definition["bindings"] if b["type"] == "httpTrigger"), None)
        if trigger is not None:
            routes[name] = trigger
    assert set(routes) == {"alerts", "blocks"}
    for template in TEMPLATES:
        ev = Evaluator(parsed(template), {"workspaceName": "ws", "functionAppName": "app", "keyVaultName": "kv"}
                       if template != "main.bicep" else {})
        variables = parsed(template)["variables"]
        for var in ("alertsRoute", "blocksRoute"):
            if var in variables:
                function = var.removesuffix("Route")
                assert ev.var(var) == routes[function].get("route", function), (template, var)
    alerts = routes["alerts"]
    assert alerts["authLevel"] == "function", "the playbook and action group send a function key"
    assert "post" in [m.lower() for m in alerts["methods"]]


def test_api_literals_name_known_routes(bicep_files, function_definitions):
    known = set()
    for name, definition in function_definitions.items():
        trigger = next((b for b in definition["bindings"] if b["type"] == "httpTrigger"), None)
        if trigger is not None:
            known.add(trigger.get("route", name))
    for path in bicep_files:
        for match in re.finditer(r"/api/(\$\{|[A-Za-z0-9_-]+)", path.read_text()):
            route = match.group(1)
            if route.startswith("${"):
                continue  # built from alertsRoute / blocksRoute, checked above
            assert route in known, f"{path.name}: /api/{route}"


# ---- waivers -----------------------------------------------------------------------------------


def test_waiver_file_is_well_formed(infra_dir):
    data = yaml.safe_load((infra_dir / "checkov-waivers.yaml").read_text())
    seen = set()
    for waiver in data["waivers"]:
        assert set(waiver) == {"check", "file", "resource", "reason"}, waiver
        assert re.fullmatch(r"CKV2?_AZURE_\d+", waiver["check"]), waiver
        assert len(waiver["reason"].split()) >= 8, f"reason too thin: {waiver}"
        key = (waiver["check"], waiver["file"], waiver["resource"])
        assert key not in seen, f"duplicate waiver {key}"
        seen.add(key)
        assert (infra_dir / waiver["file"].lstrip("/")).is_file(), waiver["file"]


def test_deployer_grants_only_with_a_deployer(parsed):
    doc = parsed("main.bicep")
    grants = ["deployerSecretsOfficer", "deployerPackageWriter", "deployerQueueReader"]
    assert not any(Evaluator(doc).resource_condition(g) for g in grants)
    ev = Evaluator(doc, {"deployerPrincipalId": "me"})
    assert all(ev.resource_condition(g) for g in grants)
    assert ev.resource_body("deployerPackageWriter")["scope"] == Ref("packageContainer")
    roles = {g: ev.resource_body(g)["properties"]["roleDefinitionId"].rsplit("/", 1)[1] for g in grants}
    assert roles == {
        "deployerSecretsOfficer": ROLE_GUIDS["keyVaultSecretsOfficer"],
        "deployerPackageWriter": ROLE_GUIDS["storageBlobDataContributor"],
        "deployerQueueReader": ROLE_GUIDS["storageQueueDataReader"],
    }


def test_render_kql_tool(infra_dir):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(infra_dir / "tools" / "render_kql.py"), "--firewall-table",
                             "Fw_CL", "--source-ip-column", "src_s", "--block-for", "P3D"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert kql_projected_columns(result.stdout) == [
        "FW_TimeGenerated", "src_s", "ValidUntil", "BlockFor", "Confidence", "ThreatType", "IndicatorId"]
    assert 'BlockFor = "P3D"' in result.stdout
