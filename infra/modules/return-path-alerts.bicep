// monitor.bicep's side of the return path (no Sentinel): the "site silent" and "enforcement
// failing" queries as log search alerts to an action group that notifies people. It must not be the
// Portcullis action group: these alerts carry no IP to block.

@description('Resource id of the Log Analytics workspace holding PortcullisEvents_CL.')
param workspaceId string

@description('Region of the alert rules (the workspace region).')
param location string

@description('Tags for the alert rules.')
param tags object = {}

@description('Action group ids to notify (e-mail, SMS, ...); empty = the alerts only show in the portal.')
param notifyActionGroupIds array = []

@description('true = create the two alerts enabled.')
param enabled bool = true

@description('Minutes without a heartbeat after which a site counts as silent.')
param silentMinutes int = 15

module kql 'return-path-kql.bicep' = {
  name: 'portcullis-return-path-kql-monitor'
  params: {
    silentMinutes: silentMinutes
  }
}

var alerts = [
  {
    name: 'portcullis-site-silent'
    displayName: 'Portcullis: site silent'
    description: 'No heartbeat from a Portcullis agent for ${silentMinutes} minutes.'
    query: kql.outputs.siteSilent
    window: 'P1D'
  }
  {
    name: 'portcullis-enforcement-failing'
    displayName: 'Portcullis: enforcement failing'
    description: 'Poisoned messages, non-policy refusals, an unhealthy agent or a non-empty poison queue.'
    query: kql.outputs.enforcementFailing
    window: 'PT10M'
  }
]

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for a in alerts: {
  name: a.name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: a.displayName
    description: a.description
    enabled: enabled
    severity: 2
    scopes: [
      workspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: a.window
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: a.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'Site'
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
      actionGroups: notifyActionGroupIds
    }
  }
}]
