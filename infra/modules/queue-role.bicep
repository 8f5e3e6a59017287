// One data-plane role assignment scoped to one storage queue.
//
// Queue scope (not account scope) is the point: the function may only add messages to the site
// queues, an agent may only read its own site's queue and write to its own poison queue.

@description('Storage account that holds the queue.')
param storageAccountName string

@description('Queue name.')
param queueName string

@description('Object id of the principal (managed identity or service principal).')
param principalId string

@description('Built-in role definition GUID.')
param roleDefinitionGuid string

@description('ServicePrincipal for managed identities and app registrations; User or Group otherwise.')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string = 'ServicePrincipal'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: queueName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, principalId, roleDefinitionGuid)
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
  }
}
