//! Portcullis agent binary (placeholder until the agent lands).
fn main() {}
