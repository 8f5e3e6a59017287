//! Configuration tests; the behaviour against a fake firewall is in `tests/appliances/opnsense.rs`.

use super::*;

const EXAMPLE: &str = r#"
url = "https://192.168.1.1"
api_key = "w86XNZob/8Oq8aC5r0kbNarNtdpoQU781fyoeaOBQsBwkXUt"
api_secret_file = "/etc/portcullis/opnsense.secret"
alias = "portcullis"
ca_file = "/etc/portcullis/opnsense.pem"
"#;

#[test]
fn the_example_config_parses() {
    let config = validate(Some(toml::from_str(EXAMPLE).unwrap())).unwrap();
    assert_eq!(config.alias, "portcullis");
    assert!(!config.create_alias);
    assert!(
        !format!("{config:?}").contains("w86XNZob"),
        "API key in Debug output"
    );
}

#[test]
fn unknown_keys_and_bad_alias_names_are_refused() {
    let err = validate(Some(
        toml::from_str(&format!("{EXAMPLE}\nalias_type = \"host\"\n")).unwrap(),
    ))
    .unwrap_err();
    assert!(err.message.contains("alias_type"), "{err}");
    let bad = EXAMPLE.replace("alias = \"portcullis\"", "alias = \"port-cullis\"");
    assert_eq!(
        validate(Some(toml::from_str(&bad).unwrap()))
            .unwrap_err()
            .key,
        "firewall.opnsense.alias"
    );
}
