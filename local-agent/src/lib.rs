//! Portcullis agent: consumes signed block messages from an Azure Storage Queue and enforces them on the
//! local firewall.

pub mod backends;
