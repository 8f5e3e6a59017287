// Example parameters for main.bicep. Copy, edit, then:
//
//   export PORTCULLIS_SIGNING_KEY="$(openssl rand -base64 32)"   # keep it: the agent needs it too
//   export PORTCULLIS_DEPLOYER_PRINCIPAL_ID="$(az ad signed-in-user show --query id -o tsv)"
//   az deployment group create -g portcullis-rg -f infra/main.bicep -p infra/main.bicepparam
//
// Secrets and object ids come from environment variables so this file can be committed.
using './main.bicep'

param namePrefix = 'portcullis'

// One queue per site; each also gets <site>-poison.
param sites = [
  'portcullis'
]

// FlexConsumption | Consumption | Dedicated. See infra/README.md before changing.
param hostingPlan = 'FlexConsumption'

// Empty on later deployments keeps the secret already in Key Vault.
param signingKey = readEnvironmentVariable('PORTCULLIS_SIGNING_KEY', '')

// Object id of the agent's service principal; empty until you have created it (step 5 of the guide).
param agentPrincipalId = readEnvironmentVariable('PORTCULLIS_AGENT_PRINCIPAL_ID', '')

// You, so that you can store the function key in Key Vault and upload the package.
param deployerPrincipalId = readEnvironmentVariable('PORTCULLIS_DEPLOYER_PRINCIPAL_ID', '')

// Opt-in queue SAS for the agent (needs shared-key access on the queue account).
param enableAgentSas = false

// Never block these (your own public addresses, resolvers you depend on, ...).
param allowlist = [
  // '203.0.113.7/32'
]

// JSON lines are easier to query in Application Insights (traces | extend d = parse_json(message)).
param logFormat = 'json'
