//! Configuration and time-syntax tests; the behaviour against a fake router is in
//! `tests/appliances/mikrotik.rs`.

use std::time::Duration;

use super::*;

const EXAMPLE: &str = r#"
url = "https://192.168.88.1"
username = "portcullis"
password_file = "/etc/portcullis/mikrotik.pass"
list = "portcullis"
fingerprint = "sha256:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB"
"#;

#[test]
fn the_example_config_parses() {
    let config = validate(Some(toml::from_str(EXAMPLE).unwrap())).unwrap();
    assert_eq!(config.list, "portcullis");
    assert_eq!(config.comment, "portcullis");
}

#[test]
fn unknown_keys_and_odd_names_are_refused() {
    let err = validate(Some(
        toml::from_str(&format!("{EXAMPLE}\nttl = 5\n")).unwrap(),
    ))
    .unwrap_err();
    assert!(err.message.contains("ttl"), "{err}");
    let bad = EXAMPLE.replace("list = \"portcullis\"", "list = \"a b\"");
    assert_eq!(
        validate(Some(toml::from_str(&bad).unwrap()))
            .unwrap_err()
            .key,
        "firewall.mikrotik.list"
    );
}

#[test]
fn routeros_time_syntax_round_trips() {
    assert_eq!(format_timeout(Duration::from_secs(90_061)), "1d1h1m1s");
    assert_eq!(format_timeout(Duration::from_secs(3600)), "1h");
    assert_eq!(format_timeout(Duration::ZERO), "1s");
    for (text, secs) in [
        ("1d1h1m1s", 90_061),
        ("23h59m50s", 86_390),
        ("1w", 604_800),
        ("00:05:00", 300),
        ("2d03:04:05", 2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
    ] {
        assert_eq!(
            parse_timeout(text),
            Some(Duration::from_secs(secs)),
            "{text}"
        );
    }
    assert_eq!(
        parse_timeout("4m5s500ms"),
        Some(Duration::from_millis(245_500))
    );
    assert_eq!(parse_timeout("soon"), None);
    assert!(MAX_TIMEOUT > Duration::from_secs(200 * 86_400));
}

#[test]
fn hostile_times_are_unreadable_not_panics() {
    for text in [
        "00:00:-1",
        "00:00:inf",
        "00:00:NaN",
        "00:00:1e300",
        "00:00:+5",
        "18446744073709551615:00:00",
        "00:18446744073709551615:00",
        "99999999999999999999:00:00",
        "18446744073709551615w",
        "18446744073709551615d",
        "18446744073709551615s18446744073709551615s",
        "1w00:00:-1",
        "1w18446744073709551615:00:00",
        "18446744073709551615s18446744073709551615:00:00",
        ":",
        "::",
        "inf",
        "-1s",
        "1x",
    ] {
        assert_eq!(parse_timeout(text), None, "{text:?}");
    }
    assert_eq!(
        parse_timeout("00:00:05.5"),
        Some(Duration::from_millis(5500))
    );
    // Readable but absurd: the caller's clock arithmetic must not overflow either.
    let huge = parse_timeout("30500000000000w").unwrap();
    let left = chrono::Duration::from_std(huge).ok();
    assert!(left.is_none_or(|l| chrono::Utc::now().checked_add_signed(l).is_none()));
    assert_eq!(
        parse_timeout("1d00:00:01"),
        Some(Duration::from_secs(86_401))
    );
}
