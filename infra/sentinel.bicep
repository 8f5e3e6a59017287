// Sentinel wiring for Portcullis. Deploy into the resource group of the Sentinel workspace, after
// main.bicep, after the package is published and after the function key is stored in Key Vault:
//
//   az deployment group create -g <sentinel-rg> -f infra/sentinel.bicep \
//     -p workspaceName=<ws> functionAppName=<app> functionAppResourceGroup=<rg> keyVaultName=<kv>
//
// Creates:
//   1. a scheduled analytics rule: threat-intelligence IP indicators joined with a firewall table,
//      IP entity mapping, custom details PortcullisValidUntil (+ PortcullisBlockFor), incidents on;
//   2. the forwarder playbook (modules/forwarder-playbook.bicep);
//   3. two automation rules: incident created by the rule -> run the playbook (block), and
//      incident from the rule changed to Closed -> run it again (the handler unblocks on
//      FalsePositive / BenignPositive closures and ignores the others).
//
// First deployment: Sentinel validates an automation rule's RunPlaybook action against the
// Automation Contributor grant made in this same deployment, and a new role assignment can take
// minutes to propagate, so the automation rules may fail once ("does not have permissions" on the
// playbook). Wait a few minutes and run the same az deployment group create command again: every
// resource here is idempotent (see infra/README.md, step 6).

@description('Name of the Log Analytics workspace with Microsoft Sentinel enabled, in this resource group.')
param workspaceName string

@description('Region for the playbook and its API connection.')
param location string = resourceGroup().location

@description('Tags for the playbook and its connection.')
param tags object = {}

@description('Function app name (output functionAppName of main.bicep).')
param functionAppName string

@description('Resource group of the function app.')
param functionAppResourceGroup string = resourceGroup().name

@description('Key Vault created by main.bicep (output keyVaultName).')
param keyVaultName string

@description('Resource group of that Key Vault.')
param keyVaultResourceGroup string = functionAppResourceGroup

@description('Secret that holds the key of the alerts function (see the guide, step "Store the function key").')
param functionKeySecretName string = 'portcullis-alerts-function-key'

@description('Firewall log table to match against: PortcullisFirewall_CL (the agent\'s summarised firewall logs, issue 11) by default; CommonSecurityLog (sourceIpColumn SourceIP), AzureFirewall or any table with a source-IP column still work.')
param firewallTable string = 'PortcullisFirewall_CL'

@description('Column of firewallTable with the remote (attacking) IP; mapped to the IP entity.')
param sourceIpColumn string = 'SrcIp'

@description('Use the legacy ThreatIntelligenceIndicator table instead of ThreatIntelIndicators (its ingestion ended on 31 August 2025 and the table is retired on 31 May 2026).')
param useLegacyThreatIntelTable bool = false

@description('How often the rule runs, in hours; also how far back it reads firewall logs.')
@minValue(1)
@maxValue(24)
param ruleFrequencyHours int = 1

@description('How far back the rule reads indicators, in days (Sentinel allows at most 14).')
@minValue(1)
@maxValue(14)
param indicatorLookbackDays int = 14

@description('Incident severity; the handler derives the default block duration from it (PORTCULLIS_TTL_*).')
@allowed([
  'Informational'
  'Low'
  'Medium'
  'High'
])
param severity string = 'Medium'

@description('Optional ISO-8601 duration sent as custom detail PortcullisBlockFor (e.g. P7D). Empty = derive from severity / indicator validity.')
param blockFor string = ''

@description('Enable the analytics rule right away.')
param ruleEnabled bool = true

@description('Name of the forwarder Logic App.')
param playbookName string = 'portcullis-forwarder'

@description('Object id of the "Azure Security Insights" service principal in your tenant (az ad sp show --id 98785600-1bb7-4fb9-b9fa-19afe2c8a360 --query id -o tsv). Grants it Microsoft Sentinel Automation Contributor on this resource group so automation rules may run the playbook. Empty = grant it yourself.')
param sentinelAutomationPrincipalId string = ''

@description('Order of the two automation rules among the workspace\'s automation rules (1-1000; lower runs first).')
@minValue(1)
@maxValue(999)
param automationRuleOrder int = 100

// Function name = folder in function-definitions/ (fixed contract); route prefix "api" (host.json).
var alertsRoute = 'alerts'

var roles = {
  microsoftSentinelAutomationContributor: 'f4c81013-99ee-4d62-a7ee-b3f1f648599a'
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(functionAppResourceGroup)
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
  scope: resourceGroup(keyVaultResourceGroup)
}

module tiQuery 'modules/ti-ip-match-query.bicep' = {
  name: 'portcullis-ti-query'
  params: {
    firewallTable: firewallTable
    sourceIpColumn: sourceIpColumn
    useLegacyThreatIntelTable: useLegacyThreatIntelTable
    indicatorLookback: '${indicatorLookbackDays}d'
    firewallLookback: '${ruleFrequencyHours}h'
    blockFor: blockFor
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Analytics rule
// ---------------------------------------------------------------------------------------------

resource analyticsRule 'Microsoft.SecurityInsights/alertRules@2024-09-01' = {
  scope: workspace
  name: guid(workspace.id, 'portcullis-ti-ip-match')
  kind: 'Scheduled'
  properties: {
    displayName: 'Portcullis: threat-intel IP seen in ${firewallTable}'
    description: 'A source IP in ${firewallTable} matches an active threat-intelligence indicator. Incidents from this rule are forwarded to Portcullis, which blocks the IP on the home firewall until the indicator expires (PortcullisValidUntil) or the incident is closed as false/benign positive.'
    enabled: ruleEnabled
    severity: severity
    query: tiQuery.outputs.query
    queryFrequency: 'PT${ruleFrequencyHours}H'
    queryPeriod: 'P${indicatorLookbackDays}D'
    triggerOperator: 'GreaterThan'
    triggerThreshold: 0
    suppressionEnabled: false
    suppressionDuration: 'PT1H'
    tactics: [
      'CommandAndControl'
      'InitialAccess'
    ]
    eventGroupingSettings: {
      aggregationKind: 'AlertPerResult'
    }
    entityMappings: [
      {
        entityType: 'IP'
        fieldMappings: [
          {
            identifier: 'Address'
            columnName: sourceIpColumn
          }
        ]
      }
    ]
    customDetails: union({
      PortcullisValidUntil: 'ValidUntil'
    }, empty(blockFor) ? {} : {
      PortcullisBlockFor: 'BlockFor'
    })
    alertDetailsOverride: {
      alertDisplayNameFormat: 'Portcullis: threat-intel IP {{${sourceIpColumn}}}'
      // Sentinel allows at most 3 {{column}} placeholders per format field; a 4th fails the whole
      // deployment (issue 9 item 15). The confidence stays in the alert's columns.
      alertDescriptionFormat: 'Indicator {{IndicatorId}} ({{ThreatType}}) valid until {{ValidUntil}}.'
    }
    incidentConfiguration: {
      createIncident: true
      groupingConfiguration: {
        enabled: true
        reopenClosedIncident: false
        lookbackDuration: 'PT5H'
        matchingMethod: 'Selected'
        groupByEntities: [
          'IP'
        ]
        groupByAlertDetails: []
        groupByCustomDetails: []
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Forwarder playbook
// ---------------------------------------------------------------------------------------------

module forwarder 'modules/forwarder-playbook.bicep' = {
  name: 'portcullis-forwarder'
  params: {
    name: playbookName
    location: location
    tags: tags
    alertsUrl: 'https://${functionApp.properties.defaultHostName}/api/${alertsRoute}'
    functionKey: vault.getSecret(functionKeySecretName)
    diagnosticsWorkspaceId: workspace.id
  }
}

// No role for the playbook's own identity: it only has the incident trigger and an HTTP action, and
// the trigger needs no Sentinel role (only actions that call Sentinel, such as adding a comment, would).
// It used to get Microsoft Sentinel Reader on the workspace, which granted read access to every
// incident for nothing (issue 9 item 18).

// Sentinel runs playbooks as its own service principal; it needs this role on the playbook's group.
resource sentinelRunsPlaybooks 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(sentinelAutomationPrincipalId)) {
  name: guid(resourceGroup().id, sentinelAutomationPrincipalId, roles.microsoftSentinelAutomationContributor)
  properties: {
    principalId: sentinelAutomationPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.microsoftSentinelAutomationContributor)
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Automation rules
// ---------------------------------------------------------------------------------------------

var fromPortcullisRule = {
  conditionType: 'Property'
  conditionProperties: {
    propertyName: 'IncidentRelatedAnalyticRuleIds'
    operator: 'Contains'
    propertyValues: [
      analyticsRule.id
    ]
  }
}

var runForwarder = [
  {
    order: 1
    actionType: 'RunPlaybook'
    actionConfiguration: {
      logicAppResourceId: forwarder.outputs.playbookId
      tenantId: subscription().tenantId
    }
  }
]

resource blockOnCreate 'Microsoft.SecurityInsights/automationRules@2024-09-01' = {
  scope: workspace
  name: guid(workspace.id, 'portcullis-block-on-create')
  properties: {
    displayName: 'Portcullis: block when the TI rule opens an incident'
    order: automationRuleOrder
    triggeringLogic: {
      isEnabled: true
      triggersOn: 'Incidents'
      triggersWhen: 'Created'
      conditions: [
        fromPortcullisRule
      ]
    }
    actions: runForwarder
  }
  dependsOn: [
    sentinelRunsPlaybooks
  ]
}

resource forwardOnClose 'Microsoft.SecurityInsights/automationRules@2024-09-01' = {
  scope: workspace
  name: guid(workspace.id, 'portcullis-forward-on-close')
  properties: {
    displayName: 'Portcullis: forward closures (false/benign positive = unblock)'
    order: automationRuleOrder + 1
    triggeringLogic: {
      isEnabled: true
      triggersOn: 'Incidents'
      triggersWhen: 'Updated'
      conditions: [
        fromPortcullisRule
        {
          conditionType: 'PropertyChanged'
          conditionProperties: {
            propertyName: 'IncidentStatus'
            changeType: 'ChangedTo'
            operator: 'Equals'
            propertyValues: [
              'Closed'
            ]
          }
        }
      ]
    }
    actions: runForwarder
  }
  dependsOn: [
    sentinelRunsPlaybooks
  ]
}

@description('Resource id of the analytics rule.')
output analyticsRuleId string = analyticsRule.id

@description('Resource id of the forwarder playbook.')
output playbookId string = forwarder.outputs.playbookId

// ---------------------------------------------------------------------------------------------
// 4. Return path: "site silent" and "enforcement failing" rules and the workbook (needs the
//    PortcullisEvents_CL table, created by main.bicep with eventsWorkspaceId = this workspace)
// ---------------------------------------------------------------------------------------------

@description('true = deploy the return path rules and workbook (main.bicep deployed with eventsWorkspaceId = this workspace).')
param returnPath bool = true

module returnPathRules 'modules/return-path-rules.bicep' = if (returnPath) {
  name: 'portcullis-return-path-rules'
  params: {
    workspaceName: workspaceName
    location: location
    tags: tags
    enabled: ruleEnabled
  }
}
