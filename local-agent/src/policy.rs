//! The agent's one owner of the never-block policy: the configured [`NeverBlock`] (the shared crate's rule,
//! also used by the handler) plus what only the agent knows — this host's own addresses and the addresses
//! of the services it needs (queue endpoints, the Entra login host) — and the text a refusal is reported
//! with.
//!
//! [`PolicyInputs`] holds the parts that change at run time and builds an immutable [`Policy`] snapshot
//! from them; the engine hands snapshots (an `Arc`) to the classifier, the control socket and reconcile,
//! so a check never holds a lock.

use std::collections::BTreeMap;

use ipnet::IpNet;
use queue_message::{NeverBlock, Refusal, Target};

/// Why a target is refused, as counted and audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Metric label: the policy's code, or `own-service`.
    pub code: &'static str,
    /// The audit and log text.
    pub text: String,
}

/// One immutable never-block policy in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    never_block: NeverBlock,
    own_service: BTreeMap<String, Vec<IpNet>>,
}

impl From<NeverBlock> for Policy {
    /// The configured policy alone (no host or service addresses).
    fn from(never_block: NeverBlock) -> Self {
        Self {
            never_block,
            own_service: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// `Ok` when `target` may be blocked, else why not.
    pub fn screen(&self, target: &Target) -> Result<(), Refused> {
        self.never_block
            .check(target)
            .map_err(|why| self.explain(&why))
    }

    /// The metric code and audit text of a refusal: `own-service` when the target overlaps an address of
    /// a service the agent needs (blocking it would cut the agent off), else the shared policy's own.
    fn explain(&self, why: &Refusal) -> Refused {
        if let Refusal::Allowlisted(net) = why {
            if let Some((host, _)) = self.own_service.iter().find(|(_, nets)| nets.contains(net)) {
                return Refused {
                    code: "own-service",
                    text: format!(
                        "own-service: {net} is an address of {host}, which the agent needs"
                    ),
                };
            }
        }
        Refused {
            code: why.code(),
            text: why.to_string(),
        }
    }
}

/// What the policy is built from; changes when host addresses or service addresses are refreshed.
#[derive(Debug, Clone, Default)]
pub struct PolicyInputs {
    /// The configured policy.
    pub configured: NeverBlock,
    /// This host's own addresses.
    pub host_nets: Vec<IpNet>,
    /// The resolved addresses of each service host the agent needs.
    pub own_service: BTreeMap<String, Vec<IpNet>>,
}

impl PolicyInputs {
    /// The policy in force: the configured one plus the host's and the services' addresses.
    pub fn build(&self) -> Policy {
        let mut never_block = self.configured.clone();
        never_block.extend_allowlist(self.host_nets.iter().copied());
        never_block.extend_allowlist(self.own_service.values().flatten().copied());
        Policy {
            never_block,
            own_service: self.own_service.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn host_and_service_addresses_are_refused_and_a_service_says_which_host() {
        let mut inputs = PolicyInputs {
            configured: NeverBlock::new(
                Vec::new(),
                vec!["203.0.113.0/24".parse().unwrap()],
                16,
                32,
            ),
            ..PolicyInputs::default()
        };
        assert!(inputs.build().screen(&t("203.0.113.5")).is_ok());
        inputs.host_nets = vec!["203.0.113.5/32".parse().unwrap()];
        let why = inputs.build().screen(&t("203.0.113.5")).unwrap_err();
        assert_eq!(why.code, "allowlisted");
        inputs.own_service.insert(
            "q.example".to_owned(),
            vec!["203.0.113.9/32".parse().unwrap()],
        );
        let why = inputs.build().screen(&t("203.0.113.9")).unwrap_err();
        assert_eq!(why.code, "own-service");
        assert!(why.text.contains("q.example"), "{}", why.text);
    }
}
