// The return path's landing zone in a Log Analytics workspace: the two custom tables, one
// `kind: Direct` data collection rule holding both streams, and the function identity's rights
// (Monitoring Metrics Publisher on the rule; Microsoft Sentinel Responder on the workspace for
// incident comments). Deployed into the workspace's resource group by main.bicep.
//
// Column lists live in infra/tables/*.columns.json: the same files the handler's tests load into
// their fake Logs Ingestion endpoint, so the rows the handler writes and the columns declared here
// cannot drift apart.

@description('Name of the Log Analytics workspace (Microsoft Sentinel workspace when Sentinel is used).')
param workspaceName string

@description('Region of the workspace; a data collection rule must be in its destination workspace region.')
param location string

@description('Tags for the data collection rule.')
param tags object = {}

@description('Principal id of the function app identity.')
param principalId string

@description('true = grant Microsoft Sentinel Responder on the workspace (incident comments); only when Sentinel is enabled on it.')
param sentinelResponder bool = true

@description('Name of the data collection rule.')
param ruleName string = 'dcr-portcullis'

@description('Interactive retention of both tables, in days (Analytics plan: 4-730).')
@minValue(4)
@maxValue(730)
param retentionInDays int = 90

var eventsColumns = loadJsonContent('../tables/PortcullisEvents_CL.columns.json')
var firewallColumns = loadJsonContent('../tables/PortcullisFirewall_CL.columns.json')

var roles = {
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  microsoftSentinelResponder: '3e150937-b8fe-4cfb-8069-0eaf05ecd056'
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

// Analytics plan: the "site silent" / "enforcement failing" rules and the TI match rule query them.
resource eventsTable 'Microsoft.OperationalInsights/workspaces/tables@2025-07-01' = {
  parent: workspace
  name: 'PortcullisEvents_CL'
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    schema: {
      name: 'PortcullisEvents_CL'
      columns: eventsColumns
    }
  }
}

resource firewallTable 'Microsoft.OperationalInsights/workspaces/tables@2025-07-01' = {
  parent: workspace
  name: 'PortcullisFirewall_CL'
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    schema: {
      name: 'PortcullisFirewall_CL'
      columns: firewallColumns
    }
  }
}

resource rule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: ruleName
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'Portcullis return path: agent reports and firewall log batches, written by the Functions handler.'
    streamDeclarations: {
      'Custom-PortcullisEvents': {
        columns: eventsColumns
      }
      'Custom-PortcullisFirewall': {
        columns: firewallColumns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          'Custom-PortcullisEvents'
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: 'Custom-PortcullisEvents_CL'
      }
      {
        streams: [
          'Custom-PortcullisFirewall'
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: 'Custom-PortcullisFirewall_CL'
      }
    ]
  }
  dependsOn: [
    eventsTable
    firewallTable
  ]
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: rule
  name: guid(rule.id, principalId, roles.monitoringMetricsPublisher)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource responder 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (sentinelResponder) {
  scope: workspace
  name: guid(workspace.id, principalId, roles.microsoftSentinelResponder)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.microsoftSentinelResponder)
  }
}

@description('The rule\'s own Logs Ingestion endpoint (PORTCULLIS_LOGS_ENDPOINT).')
output logsIngestionEndpoint string = rule.properties.endpoints.logsIngestion

@description('The rule\'s immutable id (PORTCULLIS_LOGS_RULE_ID).')
output immutableId string = rule.properties.immutableId
