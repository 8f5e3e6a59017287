// Action group that POSTs Azure Monitor alerts (common alert schema) to the handler's alerts
// function. A webhook receiver with the function key in the query string (?code=) is used
// because it authenticates the same way the forwarder playbook does and needs no key lookup by
// the Monitor service. The key is part of the receiver URI: anyone who can read the action group
// (Reader on its resource group) can read the key. See infra/README.md.

@description('Action group name.')
param name string

@description('Short name shown in notifications (at most 12 characters).')
@maxLength(12)
param shortName string = 'portcullis'

@description('Tags.')
param tags object = {}

@description('Full URL of the handler\'s alerts function, without query string.')
param alertsUrl string

@description('Function key for the alerts function.')
@secure()
param functionKey string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: name
  location: 'global'
  tags: tags
  properties: {
    groupShortName: shortName
    enabled: true
    webhookReceivers: [
      {
        name: 'portcullis-alerts'
        serviceUri: '${alertsUrl}?code=${functionKey}'
        useCommonAlertSchema: true
        useAadAuth: false
      }
    ]
  }
}

@description('Resource id of the action group.')
output id string = actionGroup.id
