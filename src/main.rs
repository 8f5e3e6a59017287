//! Portcullis Functions handler (placeholder until the handler lands).
fn main() {}
