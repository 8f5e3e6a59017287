// The return path's two detection queries, shared by sentinel.bicep (scheduled analytics rules) and
// monitor.bicep (log search alerts). Deploys nothing.
//
// Columns read (infra/tables/PortcullisEvents_CL.columns.json): TimeGenerated, Site, Event, Reason,
// Healthy, Count, Target. A `refused` event whose Reason starts with `policy:` is the never-block
// policy doing its job and not a failure; any other refusal is (a backend limit, a missing family).

@description('Minutes without a heartbeat after which a site counts as silent.')
param silentMinutes int = 15

@description('Window of the enforcement-failing query, in minutes (at least two `watch` runs).')
param failingWindowMinutes int = 10

var siteSilent = join([
  'PortcullisEvents_CL'
  '| where TimeGenerated > ago(1d)'
  '| where Event == "heartbeat"'
  '| summarize LastHeartbeat = max(TimeGenerated) by Site'
  '| where LastHeartbeat < ago(${silentMinutes}m)'
  '| extend SilentMinutes = datetime_diff("minute", now(), LastHeartbeat)'
  '| project Site, LastHeartbeat, SilentMinutes'
], '\n')

var enforcementFailing = join([
  'PortcullisEvents_CL'
  '| where TimeGenerated > ago(${failingWindowMinutes}m)'
  '| where Event == "poisoned"'
  '    or (Event == "refused" and not(Reason startswith "policy:"))'
  '    or (Event == "poison-queue" and Count > 0)'
  '    or (Event == "heartbeat" and Healthy == false)'
  '| summarize Events = count(), Reasons = make_set(Reason, 10), Targets = make_set(Target, 10), FirstSeen = min(TimeGenerated), LastSeen = max(TimeGenerated) by Site, Event'
  '| project Site, Event, Events, Reasons, Targets, FirstSeen, LastSeen'
], '\n')

@description('Sites whose last heartbeat is older than silentMinutes (one row per site).')
output siteSilent string = siteSilent

@description('Poisoned messages, non-policy refusals, non-empty poison queues and unhealthy heartbeats (one row per site and event).')
output enforcementFailing string = enforcementFailing
