// Builds the KQL that matches threat-intelligence IP indicators against a firewall table.
//
// Shared by sentinel.bicep (scheduled analytics rule) and monitor.bicep (log search alert), so
// both paths block exactly the same rows. The module deploys nothing; it only computes `query`.
//
// Output columns (the contract with the entity mapping, the custom details and the handler):
//   <sourceIpColumn>  the firewall's source IP, mapped to the IP entity / used as alert dimension
//   ValidUntil        the indicator's validity end, as an ISO-8601 string ('' = no expiry)
//   BlockFor          optional ISO-8601 duration chosen by the operator ('' = handler default)
//   FW_TimeGenerated, Confidence, ThreatType, IndicatorId  context for the analyst
//
// The indicator part follows the pattern of Microsoft's "TI map IP entity to ..." rules
// (Azure/Azure-Sentinel, Solutions/Threat Intelligence (NEW)/Analytic Rules/IPEntity_*.yaml),
// adapted so IPv6 indicators are not dropped by ipv4_is_private() returning null.

@description('Log Analytics table with the firewall logs: PortcullisFirewall_CL (summarised rows from the agent; one row per source IP, port and window, so the match works on summaries) by default, or e.g. CommonSecurityLog (SourceIP), AzureFirewall, a Syslog-derived custom table.')
param firewallTable string = 'PortcullisFirewall_CL'

@description('Column of firewallTable that holds the remote (attacking) IP address.')
param sourceIpColumn string = 'SrcIp'

@description('true = read the legacy ThreatIntelligenceIndicator table (ingestion ended 31 August 2025; the table is retired on 31 May 2026); false = ThreatIntelIndicators.')
param useLegacyThreatIntelTable bool = false

@description('How far back to look for indicators (KQL timespan literal, e.g. 14d).')
param indicatorLookback string = '14d'

@description('How far back to look at firewall logs (KQL timespan literal). Should equal the rule frequency.')
param firewallLookback string = '1h'

@description('Optional ISO-8601 duration (e.g. P7D) copied into every row as BlockFor. Empty = let the handler pick the TTL from severity.')
param blockFor string = ''

// ThreatIntelIndicators (STIX tables, GA 2025). IsActive/ValidUntil filter expired indicators.
var indicatorsCurrent = '''
let IP_Indicators = ThreatIntelIndicators
    | where TimeGenerated >= ago(__INDICATOR_LOOKBACK__)
    | extend IndicatorType = replace(@"\[|\]|\""", "", tostring(split(ObservableKey, ":", 0)))
    | where IndicatorType in ("ipv4-addr", "ipv6-addr", "network-traffic")
    | extend TI_ipEntity = tolower(tostring(ObservableValue))
    | where isnotempty(TI_ipEntity)
    | summarize LatestIndicatorTime = arg_max(TimeGenerated, *) by Id, ObservableValue
    | where IsActive == true and (isnull(ValidUntil) or ValidUntil > now())
    | extend IndicatorId = tostring(Id), ThreatType = tostring(Data.indicator_types[0]);
'''

// Legacy ThreatIntelligenceIndicator: same shape, columns mapped to the names used below.
var indicatorsLegacy = '''
let IP_Indicators = ThreatIntelligenceIndicator
    | where TimeGenerated >= ago(__INDICATOR_LOOKBACK__)
    | summarize LatestIndicatorTime = arg_max(TimeGenerated, *) by IndicatorId
    | where Active == true and (isnull(ExpirationDateTime) or ExpirationDateTime > now())
    | extend TI_ipEntity = tolower(coalesce(NetworkIP, NetworkSourceIP, NetworkDestinationIP, EmailSourceIpAddress))
    | where isnotempty(TI_ipEntity)
    | extend ValidUntil = ExpirationDateTime, Confidence = ConfidenceScore;
'''

// Common part: drop private/link-local indicators (the handler has its own allowlist too), join on
// the firewall's source IP, keep one row per (indicator, IP) and project the contract columns.
var matchPart = '''
IP_Indicators
| where isnull(parse_ipv4(TI_ipEntity)) or ipv4_is_private(TI_ipEntity) == false
| where TI_ipEntity !startswith "127." and TI_ipEntity !startswith "fe80:" and TI_ipEntity !startswith "fc" and TI_ipEntity !startswith "fd" and TI_ipEntity != "::1"
| join kind=innerunique (
    __FIREWALL_TABLE__
    | where TimeGenerated >= ago(__FIREWALL_LOOKBACK__)
    | where isnotempty(__SOURCE_IP_COLUMN__)
    | extend FW_TimeGenerated = TimeGenerated, FW_ip = tolower(tostring(__SOURCE_IP_COLUMN__))
  ) on $left.TI_ipEntity == $right.FW_ip
| where isnull(ValidUntil) or FW_TimeGenerated < ValidUntil
| summarize FW_TimeGenerated = arg_max(FW_TimeGenerated, *) by IndicatorId, __SOURCE_IP_COLUMN__
| extend ValidUntil = iff(isnull(ValidUntil), "", tostring(ValidUntil)), BlockFor = "__BLOCK_FOR__"
| project FW_TimeGenerated, __SOURCE_IP_COLUMN__, ValidUntil, BlockFor, Confidence, ThreatType, IndicatorId
'''

var template = concat(useLegacyThreatIntelTable ? indicatorsLegacy : indicatorsCurrent, matchPart)

@description('The complete KQL query.')
output query string = replace(replace(replace(replace(replace(template, '__INDICATOR_LOOKBACK__', indicatorLookback), '__FIREWALL_LOOKBACK__', firewallLookback), '__FIREWALL_TABLE__', firewallTable), '__SOURCE_IP_COLUMN__', sourceIpColumn), '__BLOCK_FOR__', blockFor)

@description('Name of the column that carries the IP (for entity mapping and alert dimensions).')
output ipColumn string = sourceIpColumn
