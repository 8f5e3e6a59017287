//! The agent's TOML configuration: parse and validate any text, with an empty environment (only
//! `*_file` secrets are read from disk, and the seeds name none that exist).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use portcullis_agent::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = HashMap::new();
    let _ = Config::from_toml(text, &env);
});
