//! Configuration tests; the behaviour against a fake console is in `tests/appliances/unifi.rs`.

use std::time::Duration;

use super::*;
use crate::config::ConfigError;

const EXAMPLE: &str = r#"
url = "https://192.168.1.1"
site = "default"
username = "portcullis"
password = "correct horse"
group_name = "portcullis"
fingerprint = "sha256:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB"
create_groups = false
"#;

fn parse(text: &str) -> Result<UnifiConfig, ConfigError> {
    validate(Some(toml::from_str(text).unwrap()))
}

#[test]
fn the_example_config_parses_with_defaults() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.site, "default");
    assert_eq!(config.max_group_size, 10_000);
    assert_eq!(config.min_write_interval, Duration::from_secs(5));
    assert_eq!(config.batch_window, Duration::from_secs(5));
    assert!(matches!(config.auth, Auth::Login { ref username, .. } if username == "portcullis"));
    assert!(
        !format!("{config:?}").contains("correct horse"),
        "password in Debug output"
    );
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = parse(&format!("{EXAMPLE}\ngroup_size = 5\n")).unwrap_err();
    assert_eq!(err.key, "firewall.unifi");
    assert!(err.message.contains("group_size"), "{err}");
    assert!(
        validate(None).is_err(),
        "the table is required: `url` has no default"
    );
}

#[test]
fn api_key_mode_and_conflicts() {
    let config =
        parse("url = \"https://unifi.lan\"\napi_key = \"k\"\nca_file = \"/etc/ca.pem\"").unwrap();
    assert!(matches!(config.auth, Auth::ApiKey(_)));
    assert!(parse("url = \"https://unifi.lan\"\nusername = \"u\"\napi_key = \"k\"").is_err());
    assert!(parse("url = \"https://unifi.lan\"\npassword = \"p\"").is_err());
    assert!(parse("url = \"http://unifi.lan\"\napi_key = \"k\"").is_err());
    assert!(parse("url = \"https://unifi.lan\"\napi_key = \"k\"\nmax_group_size = 0").is_err());
    assert!(parse("url = \"https://unifi.lan\"\napi_key = \"k\"\ngroup_name = \"a b\"").is_err());
    assert!(
        parse("url = \"https://unifi.lan\"\napi_key = \"k\"\nmin_write_interval = \"soon\"")
            .is_err()
    );
}
