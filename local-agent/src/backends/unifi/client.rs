//! The two UniFi APIs that hold address lists, behind one small trait.
//!
//! - [`LoginApi`](super::login::LoginApi) (`login.rs`): the Network application's internal REST API with a cookie session. The login style is
//!   detected (`GET /` → 200 on UniFi OS, a redirect on a classic controller): UniFi OS logs in at
//!   `/api/auth/login` (cookie `TOKEN`), prefixes Network paths with `/proxy/network` and needs
//!   `X-CSRF-Token` on writes; a classic controller logs in at `/api/login` (cookie `unifises`). A 401 means
//!   the session expired: log in again and retry once. Blocks live in firewall groups
//!   (`rest/firewallgroup`, `address-group` / `ipv6-address-group`), replaced whole by PUT.
//! - [`IntegrationApi`](super::integration::IntegrationApi) (`integration.rs`): the official integration API (`/proxy/network/integration/v1`, `X-API-KEY`) and
//!   its traffic matching lists, also replaced whole by PUT. A list must keep at least one item, so an
//!   emptied list holds a placeholder that can never be a real source address.
//!
//! Sources: Art-of-WiFi/UniFi-API-client `src/Client.php` (`login()`, `list_/create_/edit_firewallgroup`,
//! the CSRF token from the JWT); Kane610/aiounifi `aiounifi/interfaces/connectivity.py` (`check_unifi_os`,
//! `login`, `_update_login_headers`, 401 → login again); UniFi Network API docs (developer.ui.com, v10.1.68)
//! for traffic matching lists; `shared/reference/firewalls.md` §7.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use queue_message::Target;
use serde_json::Value;

use crate::backends::BackendError;

/// Address family of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 addresses and networks.
    V4,
    /// IPv6 addresses and networks.
    V6,
}

impl Family {
    /// The family of a target.
    pub fn of(target: &Target) -> Self {
        if target.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    /// `v4` or `v6`, as used in group names.
    pub fn tag(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
        }
    }

    /// The placeholder kept in a list that must not be empty: the limited broadcast address and an address
    /// of the discard-only prefix `100::/64` (RFC 6666). Neither can be the source of real traffic, and both
    /// are special-purpose ranges the agent never blocks, so they never collide with a real block.
    pub fn placeholder(self) -> Target {
        let text = match self {
            Self::V4 => "255.255.255.255",
            Self::V6 => "100::",
        };
        Target::parse(text).expect("placeholder addresses are valid")
    }
}

/// One address list on the console (a firewall group or a traffic matching list).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteGroup {
    /// Its id (a Mongo ObjectId or a UUID).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its family.
    pub family: Family,
    /// The members the agent understands (the placeholder excluded).
    pub members: BTreeSet<Target>,
    /// Members the agent cannot parse (a DNS name, a range someone added by hand): kept as they are on
    /// every write, never removed.
    pub foreign: Vec<Value>,
    /// The object as read; a legacy PUT sends it back whole with the members replaced.
    pub raw: Value,
}

/// What the backend needs from either API.
#[async_trait]
pub trait GroupApi: Send + Sync + fmt::Debug {
    /// Logs in or resolves the site; idempotent.
    async fn connect(&mut self) -> Result<(), BackendError>;
    /// Every address list of the site (the caller picks its own by name).
    async fn list_groups(&mut self) -> Result<Vec<RemoteGroup>, BackendError>;
    /// Creates a list with these members.
    async fn create_group(
        &mut self,
        name: &str,
        family: Family,
        members: &BTreeSet<Target>,
    ) -> Result<RemoteGroup, BackendError>;
    /// Replaces the whole member list of `group` (one PUT).
    async fn replace_members(
        &mut self,
        group: &RemoteGroup,
        members: &BTreeSet<Target>,
    ) -> Result<(), BackendError>;
    /// What kind of object holds the blocks, for messages ("firewall group", "traffic matching list").
    fn object_kind(&self) -> &'static str;
    /// A one-line description of the connection for logs.
    fn describe(&self) -> String;
}

fn parse_members(
    values: impl IntoIterator<Item = Value>,
    text_of: impl Fn(&Value) -> Option<String>,
    family: Family,
) -> (BTreeSet<Target>, Vec<Value>) {
    let mut members = BTreeSet::new();
    let mut foreign = Vec::new();
    for value in values {
        match text_of(&value).and_then(|text| Target::parse(&text).ok()) {
            Some(target) if Family::of(&target) == family => {
                if target != family.placeholder() {
                    members.insert(target);
                }
            }
            _ => foreign.push(value),
        }
    }
    (members, foreign)
}

/// How one API spells an address list: the two APIs store the same thing under different names.
pub(super) struct Shape {
    /// The field that says the family, and its values for IPv4 and IPv6 (any other: not an address list).
    family_key: &'static str,
    v4: &'static str,
    v6: &'static str,
    /// The id field.
    id_key: &'static str,
    /// The members array.
    members_key: &'static str,
    /// A member's address text, `None` for a member the agent cannot read.
    member_text: fn(&Value) -> Option<String>,
}

/// A firewall group (`rest/firewallgroup`): `group_type`, `_id`, `group_members` of plain strings.
pub(super) const GROUP_SHAPE: Shape = Shape {
    family_key: "group_type",
    v4: "address-group",
    v6: "ipv6-address-group",
    id_key: "_id",
    members_key: "group_members",
    member_text: |v| v.as_str().map(str::to_owned),
};

/// A traffic matching list (integration API): `type`, `id`, `items` of `{type, value}` objects.
pub(super) const LIST_SHAPE: Shape = Shape {
    family_key: "type",
    v4: "IPV4_ADDRESSES",
    v6: "IPV6_ADDRESSES",
    id_key: "id",
    members_key: "items",
    member_text: |item| match item.get("type").and_then(Value::as_str) {
        Some("IP_ADDRESS" | "SUBNET") => {
            item.get("value").and_then(Value::as_str).map(str::to_owned)
        }
        _ => None,
    },
};

/// Reads an address list of either API; `None` for an object that is not one.
pub(super) fn remote_group(value: Value, shape: &Shape) -> Option<RemoteGroup> {
    let family = match value.get(shape.family_key)?.as_str()? {
        kind if kind == shape.v4 => Family::V4,
        kind if kind == shape.v6 => Family::V6,
        _ => return None,
    };
    let id = value.get(shape.id_key)?.as_str()?.to_owned();
    let name = value.get("name")?.as_str()?.to_owned();
    let list = value
        .get(shape.members_key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (members, foreign) = parse_members(list, shape.member_text, family);
    Some(RemoteGroup {
        id,
        name,
        family,
        members,
        foreign,
        raw: value,
    })
}
