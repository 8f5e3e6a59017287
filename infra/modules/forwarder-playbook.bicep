// The forwarder playbook: a Consumption Logic App whose only job is
//   Microsoft Sentinel incident trigger  ->  one HTTP POST of the trigger body to /api/alerts.
//
// Sentinel automation rules can only run playbooks (no webhook or Functions action), so this is the
// thinnest bridge. The handler does all parsing; the playbook never looks inside the incident.
// The function key arrives as a secure parameter (read from Key Vault by sentinel.bicep) and is
// stored as a securestring workflow parameter; the action's inputs are hidden from run history.

@description('Logic App name.')
param name string

@description('Region of the Logic App and its API connection.')
param location string

@description('Tags for both resources.')
param tags object = {}

@description('Full URL of the handler\'s alerts function, e.g. https://<app>.azurewebsites.net/api/alerts.')
param alertsUrl string

@description('Function key for the alerts function (sent as x-functions-key).')
@secure()
param functionKey string

@description('Retries after the first attempt when the function answers 408, 429 or 5xx or cannot be reached.')
@minValue(0)
@maxValue(90)
param retryCount int = 6

@description('Workspace for the Logic App\'s runtime logs (WorkflowRuntime). Empty = none.')
param diagnosticsWorkspaceId string = ''

var connectionName = 'azuresentinel-${name}'
var sentinelApiId = subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'azuresentinel')

// API connection authenticated with the playbook's managed identity (no user OAuth consent).
resource sentinelConnection 'Microsoft.Web/connections@2016-06-01' = {
  name: connectionName
  location: location
  tags: tags
  kind: 'V1'
  properties: {
    displayName: connectionName
    api: {
      id: sentinelApiId
    }
    parameterValueType: 'Alternative'
  }
}

resource playbook 'Microsoft.Logic/workflows@2019-05-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: {
      '$schema': 'https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#'
      contentVersion: '1.0.0.0'
      parameters: {
        '$connections': {
          defaultValue: {}
          type: 'Object'
        }
        alertsUrl: {
          defaultValue: ''
          type: 'String'
        }
        functionKey: {
          defaultValue: ''
          type: 'SecureString'
        }
      }
      triggers: {
        Microsoft_Sentinel_incident: {
          type: 'ApiConnectionWebhook'
          inputs: {
            host: {
              connection: {
                name: '@parameters(\'$connections\')[\'azuresentinel\'][\'connectionId\']'
              }
            }
            body: {
              callback_url: '@{listCallbackUrl()}'
            }
            path: '/incident-creation'
          }
        }
      }
      actions: {
        Forward_to_Portcullis: {
          type: 'Http'
          runAfter: {}
          inputs: {
            method: 'POST'
            uri: '@parameters(\'alertsUrl\')'
            headers: {
              'Content-Type': 'application/json'
              'x-functions-key': '@parameters(\'functionKey\')'
            }
            body: '@triggerBody()'
            retryPolicy: {
              type: 'exponential'
              count: retryCount
              interval: 'PT20S'
              minimumInterval: 'PT10S'
              maximumInterval: 'PT10M'
            }
          }
          runtimeConfiguration: {
            secureData: {
              properties: [
                'inputs'
              ]
            }
          }
        }
      }
      outputs: {}
    }
    parameters: {
      '$connections': {
        value: {
          azuresentinel: {
            connectionId: sentinelConnection.id
            connectionName: connectionName
            id: sentinelApiId
            connectionProperties: {
              authentication: {
                type: 'ManagedServiceIdentity'
              }
            }
          }
        }
      }
      alertsUrl: {
        value: alertsUrl
      }
      functionKey: {
        value: functionKey
      }
    }
  }
}

@description('Resource id of the playbook (for automation rules).')
output playbookId string = playbook.id

@description('Object id of the playbook\'s managed identity.')
output principalId string = playbook.identity.principalId

// Run history into the workspace, so a failing forwarder is visible next to the incidents.
resource playbookDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(diagnosticsWorkspaceId)) {
  scope: playbook
  name: 'forwarder-runtime-logs'
  properties: {
    workspaceId: diagnosticsWorkspaceId
    logs: [
      {
        category: 'WorkflowRuntime'
        enabled: true
      }
    ]
  }
}
