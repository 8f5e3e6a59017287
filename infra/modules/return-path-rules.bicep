// Sentinel side of the return path: the "site silent" and "enforcement failing" analytics rules and
// the Portcullis workbook. Their incidents carry no IP entity and are not matched by the Portcullis
// automation rules (those require the TI match rule's id), so they never reach the handler.

@description('Name of the Microsoft Sentinel workspace (this resource group).')
param workspaceName string

@description('Region for the workbook.')
param location string

@description('Tags for the workbook.')
param tags object = {}

@description('true = create the two rules enabled.')
param enabled bool = true

@description('Minutes without a heartbeat after which a site counts as silent.')
param silentMinutes int = 15

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

module kql 'return-path-kql.bicep' = {
  name: 'portcullis-return-path-kql'
  params: {
    silentMinutes: silentMinutes
  }
}

resource siteSilent 'Microsoft.SecurityInsights/alertRules@2024-09-01' = {
  scope: workspace
  name: guid(workspace.id, 'portcullis-site-silent')
  kind: 'Scheduled'
  properties: {
    displayName: 'Portcullis: site silent'
    description: 'No heartbeat from a Portcullis agent for ${silentMinutes} minutes: the NAS or router is down, offline, or cannot reach the reports queue. Blocks are not being applied or renewed there.'
    enabled: enabled
    severity: 'Medium'
    query: kql.outputs.siteSilent
    queryFrequency: 'PT5M'
    queryPeriod: 'P1D'
    triggerOperator: 'GreaterThan'
    triggerThreshold: 0
    suppressionEnabled: true
    suppressionDuration: 'PT1H'
    tactics: [
      'DefenseEvasion'
    ]
    eventGroupingSettings: {
      aggregationKind: 'AlertPerResult'
    }
    alertDetailsOverride: {
      alertDisplayNameFormat: 'Portcullis: site {{Site}} silent'
      alertDescriptionFormat: 'Last heartbeat {{LastHeartbeat}}.'
    }
    incidentConfiguration: {
      createIncident: true
      groupingConfiguration: {
        enabled: true
        reopenClosedIncident: false
        lookbackDuration: 'P1D'
        matchingMethod: 'AllEntities'
        groupByEntities: []
        groupByAlertDetails: [
          'DisplayName'
        ]
        groupByCustomDetails: []
      }
    }
  }
}

resource enforcementFailing 'Microsoft.SecurityInsights/alertRules@2024-09-01' = {
  scope: workspace
  name: guid(workspace.id, 'portcullis-enforcement-failing')
  kind: 'Scheduled'
  properties: {
    displayName: 'Portcullis: enforcement failing'
    description: 'A Portcullis site poisoned a message, refused a block for a reason other than its never-block policy, reported itself unhealthy, or a poison queue is not empty.'
    enabled: enabled
    severity: 'Medium'
    query: kql.outputs.enforcementFailing
    queryFrequency: 'PT5M'
    queryPeriod: 'PT10M'
    triggerOperator: 'GreaterThan'
    triggerThreshold: 0
    suppressionEnabled: true
    suppressionDuration: 'PT1H'
    tactics: [
      'DefenseEvasion'
    ]
    eventGroupingSettings: {
      aggregationKind: 'AlertPerResult'
    }
    alertDetailsOverride: {
      alertDisplayNameFormat: 'Portcullis: {{Event}} at site {{Site}}'
      alertDescriptionFormat: '{{Events}} event(s); reasons: {{Reasons}}'
    }
    incidentConfiguration: {
      createIncident: true
      groupingConfiguration: {
        enabled: true
        reopenClosedIncident: false
        lookbackDuration: 'PT5H'
        matchingMethod: 'AllEntities'
        groupByEntities: []
        groupByAlertDetails: []
        groupByCustomDetails: []
      }
    }
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'portcullis-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Portcullis'
    category: 'sentinel'
    sourceId: workspace.id
    version: 'Notebook/1.0'
    serializedData: loadTextContent('../workbook/portcullis.workbook.json')
  }
}

@description('Resource id of the workbook (link it in PORTCULLIS_WORKBOOK_URL).')
output workbookId string = workbook.id

@description('Ids of the two analytics rules.')
output ruleIds array = [
  siteSilent.id
  enforcementFailing.id
]
