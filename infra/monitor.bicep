// The path with no Logic App at all: an Azure Monitor log search alert runs the same KQL as the
// Sentinel analytics rule (modules/ti-ip-match-query.bicep), splits by the source-IP column
// (one alert per IP, the IP travels as a dimension), and an action group POSTs each alert in the
// common alert schema to /api/alerts. Deploy after main.bicep, the package and the function key:
//
//   az deployment group create -g <rg> -f infra/monitor.bicep \
//     -p workspaceName=<ws> workspaceResourceGroup=<ws-rg> functionAppName=<app> keyVaultName=<kv>
//
// Differences from the Sentinel path (see infra/README.md): no incident, so no unblock on closure;
// a log search alert reads at most overrideQueryTimeRange of data, so indicators that were not
// (re)published within that window are not matched.

@description('Log Analytics workspace with the firewall and threat-intelligence tables.')
param workspaceName string

@description('Resource group of that workspace.')
param workspaceResourceGroup string = resourceGroup().name

@description('Region of the alert rule (usually the workspace region).')
param location string = resourceGroup().location

@description('Tags.')
param tags object = {}

@description('Function app name (output functionAppName of main.bicep).')
param functionAppName string

@description('Resource group of the function app.')
param functionAppResourceGroup string = resourceGroup().name

@description('Key Vault created by main.bicep.')
param keyVaultName string

@description('Resource group of that Key Vault.')
param keyVaultResourceGroup string = functionAppResourceGroup

@description('Secret that holds the key of the alerts function.')
param functionKeySecretName string = 'portcullis-alerts-function-key'

@description('Firewall log table to match against: PortcullisFirewall_CL (the agent\'s summarised firewall logs, issue 11) by default; CommonSecurityLog (sourceIpColumn SourceIP), AzureFirewall or any table with a source-IP column still work.')
param firewallTable string = 'PortcullisFirewall_CL'

@description('Column with the remote (attacking) IP; becomes the alert dimension.')
param sourceIpColumn string = 'SrcIp'

@description('Use the legacy ThreatIntelligenceIndicator table instead of ThreatIntelIndicators (its ingestion ended on 31 August 2025 and the table is retired on 31 May 2026).')
param useLegacyThreatIntelTable bool = false

@description('How often the alert runs; also how far back it reads firewall logs.')
@allowed([
  'PT15M'
  'PT30M'
  'PT1H'
  'PT6H'
  'P1D'
])
param evaluationFrequency string = 'PT1H'

@description('Data window the query may read (overrideQueryTimeRange); bounds the indicator lookback. Longer than P2D is not known to be accepted.')
@allowed([
  'P1D'
  'P2D'
])
param queryTimeRange string = 'P2D'

@description('Alert severity 0 (critical) to 4 (verbose); travels as data.essentials.severity (Sev0..Sev4).')
@minValue(0)
@maxValue(4)
param alertSeverity int = 2

@description('Optional ISO-8601 duration sent as the custom property PortcullisBlockFor (alertContext.properties).')
param blockFor string = ''

@description('Enable the alert rule right away.')
param ruleEnabled bool = true

// Function name = folder in function-definitions/ (fixed contract); route prefix "api" (host.json).
var alertsRoute = 'alerts'

var kqlLookback = {
  PT15M: '15m'
  PT30M: '30m'
  PT1H: '1h'
  PT6H: '6h'
  P1D: '1d'
}
var kqlRange = {
  P1D: '1d'
  P2D: '2d'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(functionAppResourceGroup)
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
  scope: resourceGroup(keyVaultResourceGroup)
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
  scope: resourceGroup(workspaceResourceGroup)
}

module tiQuery 'modules/ti-ip-match-query.bicep' = {
  name: 'portcullis-ti-query-monitor'
  params: {
    firewallTable: firewallTable
    sourceIpColumn: sourceIpColumn
    useLegacyThreatIntelTable: useLegacyThreatIntelTable
    indicatorLookback: kqlRange[queryTimeRange]
    firewallLookback: kqlLookback[evaluationFrequency]
    blockFor: blockFor
  }
}

module actionGroup 'modules/alerts-action-group.bicep' = {
  name: 'portcullis-action-group'
  params: {
    name: 'portcullis-alerts'
    tags: tags
    alertsUrl: 'https://${functionApp.properties.defaultHostName}/api/${alertsRoute}'
    functionKey: vault.getSecret(functionKeySecretName)
  }
}

// The GA api-version (issue 9 item 18); the 2023-03-15-preview one adds nothing the rule uses.
resource logAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'portcullis-ti-ip-match'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Portcullis: threat-intel IP seen in ${firewallTable}'
    description: 'A source IP in ${firewallTable} matches an active threat-intelligence indicator; the action group forwards one alert per IP to Portcullis.'
    enabled: ruleEnabled
    severity: alertSeverity
    scopes: [
      workspace.id
    ]
    evaluationFrequency: evaluationFrequency
    windowSize: evaluationFrequency
    overrideQueryTimeRange: queryTimeRange
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: tiQuery.outputs.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: sourceIpColumn
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.outputs.id
      ]
      customProperties: empty(blockFor) ? {} : {
        PortcullisBlockFor: blockFor
      }
    }
  }
}

@description('Resource id of the log search alert rule.')
output alertRuleId string = logAlert.id

// ---------------------------------------------------------------------------------------------
// Return path: "site silent" and "enforcement failing" as log search alerts to people, not to
// Portcullis (PortcullisEvents_CL must be in this workspace: main.bicep eventsWorkspaceId).
// ---------------------------------------------------------------------------------------------

@description('true = deploy the return path alerts.')
param returnPath bool = true

@description('Action groups notified by the return path alerts (e-mail, SMS, ...). Empty = portal only.')
param notifyActionGroupIds array = []

module returnPathAlerts 'modules/return-path-alerts.bicep' = if (returnPath) {
  name: 'portcullis-return-path-alerts'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    workspaceId: workspace.id
    location: location
    tags: tags
    notifyActionGroupIds: notifyActionGroupIds
    enabled: ruleEnabled
  }
}
