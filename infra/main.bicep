// Portcullis cloud side: the queues, the Functions custom handler that fills them, its identity,
// its secrets and its telemetry. Deploy into a resource group of its own:
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
//
// What each principal may do (all data-plane roles are scoped as narrowly as ARM allows):
//   function identity  Storage Queue Data Message Sender on each site queue (not the -poison queues),
//                      Storage Blob Data Owner on its own host storage account,
//                      Key Vault Secrets User on the vault, Monitoring Metrics Publisher on App Insights
//   agent principal    Storage Queue Data Message Processor on its site queue,
//                      Storage Queue Data Message Sender on its site's -poison queue
//   deployer (opt.)    Key Vault Secrets Officer (to store the forwarder's function key),
//                      Storage Blob Data Contributor on the package container (to upload the zip),
//                      Storage Queue Data Reader on the queue account (to peek while verifying)
//
// See infra/README.md for the step-by-step guide and the list of things not verified in Azure.

// ---------------------------------------------------------------------------------------------
// Naming and placement
// ---------------------------------------------------------------------------------------------

@description('Short lowercase prefix (letters and digits only) for every resource name. Storage account names are built as <prefix>q<hash> and <prefix>h<hash>.')
@minLength(3)
@maxLength(10)
param namePrefix string = 'portcullis'

@description('Region for all resources. With hostingPlan = FlexConsumption it must be a region that offers Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------

@description('One queue per site (home, cabin, ...). Each also gets a <site>-poison queue. Queue names: 3-56 characters, lowercase letters, digits and single hyphens.')
@minLength(1)
param sites array = [
  'portcullis'
]

// ---------------------------------------------------------------------------------------------
// Hosting
// ---------------------------------------------------------------------------------------------

@description('FlexConsumption (default; runtime "custom" on FC1), Consumption (Linux Y1, retires 30 Sep 2028), or Dedicated (Linux B1 App Service plan, always on, fixed monthly price). See infra/README.md, "Choosing the hosting plan".')
@allowed([
  'FlexConsumption'
  'Consumption'
  'Dedicated'
])
param hostingPlan string = 'FlexConsumption'

@description('Flex Consumption only: memory per instance in MB. The handler needs far less than 512 MB; 2048 is the size every Flex region offers.')
@allowed([
  512
  2048
  4096
])
param flexInstanceMemoryMB int = 2048

@description('Flex Consumption only: upper bound on instances (40 is the smallest value the plan accepts).')
@minValue(40)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

@description('Base64 of at least 32 random bytes (openssl rand -base64 32). The agent needs the same value to verify messages. Required on the first deployment; leave empty later to keep the stored secret.')
@secure()
param signingKey string = ''

@description('Key Vault secret name for the signing key.')
param signingKeySecretName string = 'portcullis-signing-key'

@description('Key Vault secret name under which the guide stores the function key that the forwarder playbook and the action group use (sentinel.bicep and monitor.bicep read it).')
param functionKeySecretName string = 'portcullis-alerts-function-key'

@description('Days a deleted vault or secret can be recovered. Purge protection is always on, so a deleted vault keeps its name reserved this long (recover it with az keyvault recover).')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 7

// ---------------------------------------------------------------------------------------------
// Principals
// ---------------------------------------------------------------------------------------------

@description('Object id of the agent\'s service principal (az ad sp show --id <appId> --query id -o tsv). Empty = no agent role assignment yet.')
param agentPrincipalId string = ''

@description('Site queue the agent principal consumes. Empty = the first entry of sites.')
param agentSite string = ''

@description('More agents, one per site: [{ site: \'cabin\', principalId: \'<object id>\' }].')
param additionalAgents array = []

@description('Opt-in: allow shared-key (and therefore SAS) access on the queue storage account, so the agent can use a queue-scoped SAS (sp=rup) instead of a service principal. Every holder of an account key then has full access; see infra/README.md.')
param enableAgentSas bool = false

@description('Object id of the person or pipeline running the deployment guide (az ad signed-in-user show --query id -o tsv). Grants Key Vault Secrets Officer, Storage Blob Data Contributor on the package container and Storage Queue Data Reader on the queue account. Empty = no grant.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

// ---------------------------------------------------------------------------------------------
// Return path (reports from the agents → incident comments and PortcullisEvents_CL)
// ---------------------------------------------------------------------------------------------

@description('PORTCULLIS_REPORTS_QUEUE: the one reports queue all agents write to (handler default portcullis-reports).')
param reportsQueue string = 'portcullis-reports'

@description('Resource id of the Log Analytics workspace that receives PortcullisEvents_CL and PortcullisFirewall_CL: your Microsoft Sentinel workspace. Empty = this deployment\'s own workspace (no Sentinel, use monitor.bicep alerts).')
param eventsWorkspaceId string = ''

@description('Region of eventsWorkspaceId (the data collection rule must be in it). Empty = location.')
param eventsWorkspaceLocation string = ''

@description('PORTCULLIS_SENTINEL_COMMENTS: comment on Sentinel incidents and grant Microsoft Sentinel Responder on eventsWorkspaceId. Default: on when eventsWorkspaceId is given.')
param sentinelComments bool = !empty(eventsWorkspaceId)

@description('PORTCULLIS_WORKBOOK_URL: link to the Portcullis workbook, added to incident comments. Empty = no link.')
param workbookUrl string = ''

@description('PORTCULLIS_ARM_ENDPOINT: Azure Resource Manager endpoint for incident comments (handler default https://management.azure.com).')
param armEndpoint string = ''

// ---------------------------------------------------------------------------------------------
// Telemetry
// ---------------------------------------------------------------------------------------------

@description('Retention of the Log Analytics workspace behind Application Insights (days).')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Daily ingestion cap of that workspace in GB, as a decimal string (caps the bill if something loops).')
param logDailyCapGb string = '0.1'

// ---------------------------------------------------------------------------------------------
// Handler policy (app settings). Empty string / empty array = the handler's built-in default.
// ---------------------------------------------------------------------------------------------

@description('PORTCULLIS_ALLOWLIST: CIDRs that are never blocked (your own public IPs, DNS resolvers, ...).')
param allowlist array = []

@description('PORTCULLIS_LAB_RANGES: special-purpose CIDRs (e.g. a documentation range) carved out of the never-block list, so addresses in them CAN be blocked, for labs and tests; the allowlist still wins.')
param labRanges array = []

@description('PORTCULLIS_MIN_PREFIX_V4: shortest IPv4 prefix the handler will block (handler default 16).')
param minPrefixV4 string = ''

@description('PORTCULLIS_MIN_PREFIX_V6: shortest IPv6 prefix the handler will block (handler default 32).')
param minPrefixV6 string = ''

@description('PORTCULLIS_MAX_TARGETS: most IPs accepted from one alert (handler default 1000).')
param maxTargets string = ''

@description('PORTCULLIS_TTL_INFORMATIONAL: block duration for informational incidents, ISO-8601 (handler default P1D).')
param ttlInformational string = ''

@description('PORTCULLIS_TTL_LOW (handler default P3D).')
param ttlLow string = ''

@description('PORTCULLIS_TTL_MEDIUM (handler default P7D).')
param ttlMedium string = ''

@description('PORTCULLIS_TTL_HIGH (handler default P30D).')
param ttlHigh string = ''

@description('PORTCULLIS_MAX_TTL: upper bound for any block, including PortcullisBlockFor and ValidUntil (handler default P90D).')
param maxTtl string = ''

@description('PORTCULLIS_MAX_BODY_BYTES: largest request body accepted (handler default 4194304).')
param maxBodyBytes string = ''

@description('PORTCULLIS_IP_DIMENSIONS: Azure Monitor dimension names that carry IPs (e.g. [\'SourceIP\']). Empty = any dimension whose value parses as an IP.')
param ipDimensions array = []

@description('PORTCULLIS_RULE_IDS: analytics rule ids (GUIDs or resource ids) whose alerts may block when an incident carries alerts (Defender-portal correlation merges other alerts into incidents). Empty = every alert counts; see also sentinelWorkspaceId.')
param ruleIds array = []

@description('Resource id of the Sentinel workspace that sentinel.bicep deploys into. When set, the id of the Portcullis analytics rule (the same guid() sentinel.bicep names it with) is added to PORTCULLIS_RULE_IDS, so main.bicep can run first.')
param sentinelWorkspaceId string = ''

@description('PORTCULLIS_LOG_FORMAT: text or json.')
@allowed([
  'text'
  'json'
])
param logFormat string = 'json'

@description('RUST_LOG: tracing filter for the handler (handler default portcullis=info,queue_message=info).')
param rustLog string = ''

// ---------------------------------------------------------------------------------------------
// Derived names and constants
// ---------------------------------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id, namePrefix)
var isFlex = hostingPlan == 'FlexConsumption'
var isConsumption = hostingPlan == 'Consumption'
var isDedicated = hostingPlan == 'Dedicated'

var queueAccountName = toLower('${namePrefix}q${take(suffix, 13)}')
var hostAccountName = toLower('${namePrefix}h${take(suffix, 13)}')
var keyVaultName = '${namePrefix}-kv-${take(suffix, 9)}'
var functionAppName = '${namePrefix}-${suffix}'
var planName = '${namePrefix}-plan-${take(suffix, 6)}'
var identityName = '${namePrefix}-func-id'
var logWorkspaceName = '${namePrefix}-logs-${take(suffix, 6)}'
var appInsightsName = '${namePrefix}-ai-${take(suffix, 6)}'

// Flex Consumption reads the package from this container; Consumption runs from a blob in it.
var packageContainerName = 'app-package'
var packageBlobName = 'portcullis-functions.zip'

// Function names are the folders in function-definitions/ (fixed contract).
var alertsRoute = 'alerts'
var blocksRoute = 'blocks'

var reportsPoisonQueue = '${reportsQueue}-poison'
var eventsWorkspaceSubscription = empty(eventsWorkspaceId) ? subscription().subscriptionId : split(eventsWorkspaceId, '/')[2]
var eventsWorkspaceGroup = empty(eventsWorkspaceId) ? resourceGroup().name : split(eventsWorkspaceId, '/')[4]
var eventsWorkspaceName = empty(eventsWorkspaceId) ? logWorkspaceName : last(split(eventsWorkspaceId, '/'))

var queueServiceUri = 'https://${queueAccountName}.queue.${environment().suffixes.storage}'
var signingKeySecretUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/${signingKeySecretName}'

// Built-in role definition GUIDs (identical in every tenant).
var roles = {
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageQueueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  storageQueueDataReader: '19e7f393-937e-4f77-808e-94535e297925'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var planSkus = {
  FlexConsumption: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  Consumption: {
    name: 'Y1'
    tier: 'Dynamic'
  }
  Dedicated: {
    name: 'B1'
    tier: 'Basic'
  }
}

var primaryAgent = empty(agentPrincipalId) ? [] : [
  {
    site: empty(agentSite) ? sites[0] : agentSite
    principalId: agentPrincipalId
  }
]
var agents = concat(primaryAgent, additionalAgents)

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

resource funcIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------------
// Queue storage (what the agent reads). Entra ID only unless enableAgentSas.
// ---------------------------------------------------------------------------------------------

resource queueAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: queueAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: enableAgentSas
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: queueAccount
  name: 'default'
}

resource siteQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for site in sites: {
  parent: queueService
  name: site
}]

resource poisonQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for site in sites: {
  parent: queueService
  name: '${site}-poison'
}]

// The reports queue shared by every site, and the poison queue the Functions host moves failed
// reports to.
resource reportsQueueResource 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: reportsQueue
}

resource reportsPoisonQueueResource 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: reportsPoisonQueue
}

// Queue access log (read/write/delete) for the queue account, into the app's workspace.
resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: queueService
  name: 'queue-access-log'
  properties: {
    workspaceId: logs.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

// ---------------------------------------------------------------------------------------------
// Host storage for the Functions runtime (keys, leases, package). Never shared key.
// ---------------------------------------------------------------------------------------------

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostAccount
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: packageContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------------------------------------
// Telemetry: a small workspace of its own (not the Sentinel workspace, whose ingestion is billed
// at Sentinel rates) and workspace-based Application Insights with local auth disabled.
// ---------------------------------------------------------------------------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logWorkspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionInDays
    workspaceCapping: {
      dailyQuotaGb: json(logDailyCapGb)
    }
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

// ---------------------------------------------------------------------------------------------
// Key Vault (RBAC): the signing key, and the function key stored by the guide.
// ---------------------------------------------------------------------------------------------

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    enablePurgeProtection: true
    // sentinel.bicep and monitor.bicep read the function key with getSecret() at deployment time.
    enabledForTemplateDeployment: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource signingSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(signingKey)) {
  parent: vault
  name: signingKeySecretName
  properties: {
    value: signingKey
    contentType: 'base64; Portcullis queue-message signing key'
  }
}

// ---------------------------------------------------------------------------------------------
// Role assignments that do not target a queue
// ---------------------------------------------------------------------------------------------

resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hostAccount
  name: guid(hostAccount.id, funcIdentity.id, roles.storageBlobDataOwner)
  properties: {
    principalId: funcIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, funcIdentity.id, roles.keyVaultSecretsUser)
  properties: {
    principalId: funcIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, funcIdentity.id, roles.monitoringMetricsPublisher)
  properties: {
    principalId: funcIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  scope: vault
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsOfficer)
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

resource deployerPackageWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  scope: packageContainer
  name: guid(packageContainer.id, deployerPrincipalId, roles.storageBlobDataContributor)
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource deployerQueueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  scope: queueAccount
  name: guid(queueAccount.id, deployerPrincipalId, roles.storageQueueDataReader)
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataReader)
  }
}

// ---------------------------------------------------------------------------------------------
// Queue-scoped role assignments
// ---------------------------------------------------------------------------------------------

module functionQueueSender 'modules/queue-role.bicep' = [for site in sites: {
  name: 'fn-sender-${site}'
  params: {
    storageAccountName: queueAccount.name
    queueName: site
    principalId: funcIdentity.properties.principalId
    roleDefinitionGuid: roles.storageQueueDataMessageSender
  }
  dependsOn: [
    siteQueues
  ]
}]

module agentQueueProcessor 'modules/queue-role.bicep' = [for agent in agents: {
  name: 'agent-processor-${agent.site}'
  params: {
    storageAccountName: queueAccount.name
    queueName: agent.site
    principalId: agent.principalId
    roleDefinitionGuid: roles.storageQueueDataMessageProcessor
  }
  dependsOn: [
    siteQueues
  ]
}]

module agentPoisonSender 'modules/queue-role.bicep' = [for agent in agents: {
  name: 'agent-poison-sender-${agent.site}'
  params: {
    storageAccountName: queueAccount.name
    queueName: '${agent.site}-poison'
    principalId: agent.principalId
    roleDefinitionGuid: roles.storageQueueDataMessageSender
  }
  dependsOn: [
    poisonQueues
  ]
}]

// Return path: agents may only add to the reports queue; the function's queue trigger needs Reader +
// Message Processor on it and Sender on its poison queue (the host moves failed reports there);
// `watch` reads the approximate count of every poison queue (Reader only).
module agentReportsSender 'modules/queue-role.bicep' = [for agent in agents: {
  name: 'agent-reports-sender-${agent.site}'
  params: {
    storageAccountName: queueAccount.name
    queueName: reportsQueue
    principalId: agent.principalId
    roleDefinitionGuid: roles.storageQueueDataMessageSender
  }
  dependsOn: [
    reportsQueueResource
  ]
}]

module functionReportsProcessor 'modules/queue-role.bicep' = {
  name: 'fn-reports-processor'
  params: {
    storageAccountName: queueAccount.name
    queueName: reportsQueue
    principalId: funcIdentity.properties.principalId
    roleDefinitionGuid: roles.storageQueueDataMessageProcessor
  }
  dependsOn: [
    reportsQueueResource
  ]
}

module functionReportsReader 'modules/queue-role.bicep' = {
  name: 'fn-reports-reader'
  params: {
    storageAccountName: queueAccount.name
    queueName: reportsQueue
    principalId: funcIdentity.properties.principalId
    roleDefinitionGuid: roles.storageQueueDataReader
  }
  dependsOn: [
    reportsQueueResource
  ]
}

module functionReportsPoisonSender 'modules/queue-role.bicep' = {
  name: 'fn-reports-poison-sender'
  params: {
    storageAccountName: queueAccount.name
    queueName: reportsPoisonQueue
    principalId: funcIdentity.properties.principalId
    roleDefinitionGuid: roles.storageQueueDataMessageSender
  }
  dependsOn: [
    reportsPoisonQueueResource
  ]
}

module functionPoisonReader 'modules/queue-role.bicep' = [for site in sites: {
  name: 'fn-poison-reader-${site}'
  params: {
    storageAccountName: queueAccount.name
    queueName: '${site}-poison'
    principalId: funcIdentity.properties.principalId
    roleDefinitionGuid: roles.storageQueueDataReader
  }
  dependsOn: [
    poisonQueues
  ]
}]

module functionReportsPoisonReader 'modules/queue-role.bicep' = {
  name: 'fn-reports-poison-reader'
  params: {
    storageAccountName: queueAccount.name
    queueName: reportsPoisonQueue
    principalId: funcIdentity.properties.principalId
    roleDefinitionGuid: roles.storageQueueDataReader
  }
  dependsOn: [
    reportsPoisonQueueResource
  ]
}

// Tables, data collection rule and the function's rights on them, in the events workspace.
module returnPath 'modules/return-path.bicep' = {
  name: 'portcullis-return-path'
  scope: resourceGroup(eventsWorkspaceSubscription, eventsWorkspaceGroup)
  params: {
    workspaceName: eventsWorkspaceName
    location: empty(eventsWorkspaceLocation) ? location : eventsWorkspaceLocation
    tags: tags
    principalId: funcIdentity.properties.principalId
    sentinelResponder: sentinelComments
  }
  dependsOn: [
    logs
  ]
}

// ---------------------------------------------------------------------------------------------
// Function app
// ---------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'linux'
  sku: planSkus[hostingPlan]
  properties: {
    reserved: true
  }
}

// Settings the handler reads (contract: `portcullis-handler --list-settings`). Empty values are
// dropped so the handler's own defaults apply.
var handlerSettings = [
  {
    name: 'PORTCULLIS_SIGNING_KEY'
    value: '@Microsoft.KeyVault(SecretUri=${signingKeySecretUri})'
  }
  {
    name: 'PORTCULLIS_QUEUE__queueServiceUri'
    value: queueServiceUri
  }
  {
    name: 'PORTCULLIS_QUEUE__clientId'
    value: funcIdentity.properties.clientId
  }
  {
    name: 'PORTCULLIS_QUEUES'
    value: join(sites, ',')
  }
  {
    // The identity may only add messages; it cannot create queues (the template does that).
    name: 'PORTCULLIS_CREATE_QUEUES'
    value: 'false'
  }
  {
    name: 'PORTCULLIS_ALLOWLIST'
    value: join(allowlist, ',')
  }
  {
    name: 'PORTCULLIS_LAB_RANGES'
    value: join(labRanges, ',')
  }
  {
    name: 'PORTCULLIS_MIN_PREFIX_V4'
    value: minPrefixV4
  }
  {
    name: 'PORTCULLIS_MIN_PREFIX_V6'
    value: minPrefixV6
  }
  {
    name: 'PORTCULLIS_MAX_TARGETS'
    value: maxTargets
  }
  {
    name: 'PORTCULLIS_TTL_INFORMATIONAL'
    value: ttlInformational
  }
  {
    name: 'PORTCULLIS_TTL_LOW'
    value: ttlLow
  }
  {
    name: 'PORTCULLIS_TTL_MEDIUM'
    value: ttlMedium
  }
  {
    name: 'PORTCULLIS_TTL_HIGH'
    value: ttlHigh
  }
  {
    name: 'PORTCULLIS_MAX_TTL'
    value: maxTtl
  }
  {
    name: 'PORTCULLIS_MAX_BODY_BYTES'
    value: maxBodyBytes
  }
  {
    name: 'PORTCULLIS_IP_DIMENSIONS'
    value: join(ipDimensions, ',')
  }
  {
    // Keep the guid() seed in step with the analytics rule's name in sentinel.bicep.
    name: 'PORTCULLIS_RULE_IDS'
    value: join(union(ruleIds, empty(sentinelWorkspaceId) ? [] : [guid(sentinelWorkspaceId, 'portcullis-ti-ip-match')]), ',')
  }
  {
    name: 'PORTCULLIS_LOG_FORMAT'
    value: logFormat
  }
  {
    name: 'RUST_LOG'
    value: rustLog
  }
  {
    name: 'PORTCULLIS_REPORTS_QUEUE'
    value: reportsQueue
  }
  {
    name: 'PORTCULLIS_LOGS_ENDPOINT'
    value: returnPath.outputs.logsIngestionEndpoint
  }
  {
    name: 'PORTCULLIS_LOGS_RULE_ID'
    value: returnPath.outputs.immutableId
  }
  {
    name: 'PORTCULLIS_LOGS_STREAM'
    value: 'Custom-PortcullisEvents'
  }
  {
    name: 'PORTCULLIS_LOGS_FIREWALL_STREAM'
    value: 'Custom-PortcullisFirewall'
  }
  {
    name: 'PORTCULLIS_SENTINEL_COMMENTS'
    value: string(sentinelComments)
  }
  {
    name: 'PORTCULLIS_ARM_ENDPOINT'
    value: armEndpoint
  }
  {
    name: 'PORTCULLIS_WORKBOOK_URL'
    value: workbookUrl
  }
]

// Settings the Functions platform reads (identity-based host storage, Entra-only App Insights).
var platformSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: hostAccountName
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: funcIdentity.properties.clientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${funcIdentity.properties.clientId};Authorization=AAD'
  }
]

// Flex Consumption rejects these two; there the runtime is functionAppConfig.runtime.
var classicRuntimeSettings = [
  {
    name: 'FUNCTIONS_EXTENSION_VERSION'
    value: '~4'
  }
  {
    name: 'FUNCTIONS_WORKER_RUNTIME'
    value: 'custom'
  }
]

// Linux Consumption with no Azure Files share: run from the uploaded package, fetched with the
// user-assigned identity.
var runFromPackageSettings = [
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE'
    value: '${hostAccount.properties.primaryEndpoints.blob}${packageContainerName}/${packageBlobName}'
  }
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID'
    value: funcIdentity.id
  }
]

var appSettings = concat(platformSettings, isFlex ? [] : classicRuntimeSettings, isConsumption ? runFromPackageSettings : [], filter(handlerSettings, s => !empty(s.value)))

var flexAppConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${hostAccount.properties.primaryEndpoints.blob}${packageContainerName}'
      authentication: {
        type: 'UserAssignedIdentity'
        userAssignedIdentityResourceId: funcIdentity.id
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: flexMaximumInstanceCount
    instanceMemoryMB: flexInstanceMemoryMB
  }
  runtime: {
    name: 'custom'
    version: '1.0'
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${funcIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: funcIdentity.id
    functionAppConfig: isFlex ? flexAppConfig : null
    siteConfig: {
      appSettings: appSettings
      linuxFxVersion: isFlex ? null : ''
      alwaysOn: isDedicated
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
  }
  dependsOn: [
    hostBlobOwner
    vaultSecretsUser
    metricsPublisher
    signingSecret
    functionQueueSender
    functionReportsProcessor
    functionReportsReader
  ]
}

// The handler's and host's logs (FunctionAppLogs) into this deployment's workspace.
resource functionAppDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: functionApp
  name: 'function-app-logs'
  properties: {
    workspaceId: logs.id
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

// Publishing uses Entra ID tokens (az CLI, Core Tools); no basic-auth publishing credentials.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs used by the guide and by sentinel.bicep / monitor.bicep parameters
// ---------------------------------------------------------------------------------------------

@description('Function app name (functionAppName parameter of sentinel.bicep and monitor.bicep).')
output functionAppName string = functionApp.name

@description('Public URL of the alerts function.')
output alertsUrl string = 'https://${functionApp.properties.defaultHostName}/api/${alertsRoute}'

@description('Public URL of the blocks function.')
output blocksUrl string = 'https://${functionApp.properties.defaultHostName}/api/${blocksRoute}'

@description('Key Vault name (keyVaultName parameter of sentinel.bicep and monitor.bicep).')
output keyVaultName string = vault.name

@description('Secret name for the function key the guide stores.')
output functionKeySecretName string = functionKeySecretName

@description('Secret name of the signing key.')
output signingKeySecretName string = signingKeySecretName

@description('Queue service endpoint for the agent configuration.')
output queueServiceUri string = queueServiceUri

@description('Queue storage account name.')
output queueAccountName string = queueAccount.name

@description('Queue names, one per site.')
output siteQueueNames array = sites

@description('Host storage account and container that hold the package (Consumption: upload the zip there).')
output packageContainerUrl string = '${hostAccount.properties.primaryEndpoints.blob}${packageContainerName}'

@description('Blob name the Consumption plan runs from.')
output packageBlobName string = packageBlobName

@description('Client id of the function identity.')
output functionIdentityClientId string = funcIdentity.properties.clientId

@description('Reports queue (the agents\' `[reports] queue`).')
output reportsQueueName string = reportsQueue

@description('Logs Ingestion endpoint of the return path\'s data collection rule.')
output logsIngestionEndpoint string = returnPath.outputs.logsIngestionEndpoint

@description('Immutable id of the return path\'s data collection rule.')
output dataCollectionRuleImmutableId string = returnPath.outputs.immutableId

@description('The hosting plan that was deployed.')
output hostingPlan string = hostingPlan
