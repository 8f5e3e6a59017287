//! Configuration tests; the behaviour against a fake firewall is in `tests/appliances/pfsense.rs`.

use std::time::Duration;

use super::*;

const EXAMPLE: &str = r#"
url = "https://192.168.1.1"
api_key_file = "/etc/portcullis/pfsense.key"
alias = "portcullis"
fingerprint = "sha256:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB"
"#;

#[test]
fn the_example_config_parses_with_defaults() {
    let config = validate(Some(toml::from_str(EXAMPLE).unwrap())).unwrap();
    assert_eq!(config.batch_window, Duration::from_secs(5));
    assert_eq!(config.endpoint.timeout, Duration::from_secs(30));
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = validate(Some(
        toml::from_str(&format!("{EXAMPLE}\napply = false\n")).unwrap(),
    ))
    .unwrap_err();
    assert!(err.message.contains("apply"), "{err}");
}

#[test]
fn the_shared_connection_keys_pass_through_the_flattened_table() {
    let config = validate(Some(
        toml::from_str(&format!("{EXAMPLE}\ntimeout = \"20s\"\n")).unwrap(),
    ))
    .unwrap();
    assert_eq!(config.endpoint.timeout, Duration::from_secs(20));
    let err = validate(Some(
        toml::from_str(&format!("{EXAMPLE}\ntimeout = \"soon\"\n")).unwrap(),
    ))
    .unwrap_err();
    assert_eq!(err.key, "firewall.pfsense", "{err}");
    let err = validate(Some(
        toml::from_str(&format!("{EXAMPLE}\nfingerprnt = \"x\"\n")).unwrap(),
    ))
    .unwrap_err();
    assert!(err.message.contains("unknown field `fingerprnt`"), "{err}");
}
