//! `portcullis-handler --check`: every problem in the environment at once (settings, then the queue
//! connection they describe), and a warning for each `PORTCULLIS_*` name the handler does not read, with the
//! closest name it does read.

use crate::service::AppState;
use crate::settings::{Settings, SETTINGS};

/// `PORTCULLIS_*` names read by other parts of Portcullis (the agent, the scripts, test hooks): not typos
/// when they appear in the handler's environment, e.g. in a shell that runs both for `make demo`.
const ELSEWHERE: &[&str] = &[
    "PORTCULLIS_AGENT_CONFIG",
    "PORTCULLIS_POISON_QUEUE",
    "PORTCULLIS_CLIENT_SECRET",
    "PORTCULLIS_UNIFI_PASSWORD",
    "PORTCULLIS_UNIFI_API_KEY",
    "PORTCULLIS_OPNSENSE_API_KEY",
    "PORTCULLIS_OPNSENSE_API_SECRET",
    "PORTCULLIS_PFSENSE_API_KEY",
    "PORTCULLIS_MIKROTIK_PASSWORD",
    "PORTCULLIS_FAILPOINT",
    "PORTCULLIS_HANDLER_BINARY",
    "PORTCULLIS_DEMO_DRY_RUN",
];

/// What `--check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Each makes start-up fail.
    pub problems: Vec<String>,
    /// Each is worth a look but does not stop the handler (unknown `PORTCULLIS_*` names).
    pub warnings: Vec<String>,
}

/// Checks the settings read through `lookup`, and `names` (every variable name in the environment) for
/// unknown `PORTCULLIS_*` ones. Does no I/O.
pub fn check(lookup: &dyn Fn(&str) -> Option<String>, names: &[String]) -> CheckReport {
    let mut report = CheckReport {
        warnings: unknown_names(names),
        ..CheckReport::default()
    };
    match Settings::from_lookup(lookup) {
        Ok(settings) => {
            if let Err(problem) = AppState::from_settings(&settings) {
                report.problems.push(problem);
            }
        }
        Err(err) => {
            report.problems = err.0;
            // The connection string is otherwise parsed only once every other setting is valid; parse it
            // here too, so a fresh deployment learns about all its mistakes in one run.
            let text = lookup("PORTCULLIS_QUEUE").filter(|v| !v.trim().is_empty());
            if let Some(Err(e)) = text.map(|t| queue_message::QueueConnection::parse(t.trim())) {
                report.problems.push(format!("PORTCULLIS_QUEUE: {e}"));
            }
        }
    }
    report
}

/// A warning for every `PORTCULLIS_*` name that nothing reads, naming the closest setting the handler reads.
pub fn unknown_names(names: &[String]) -> Vec<String> {
    let mut names: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("PORTCULLIS_"))
        .filter(|n| !SETTINGS.iter().any(|s| s.name == n.as_str()))
        .filter(|n| !ELSEWHERE.contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| match closest(name) {
            Some(known) => format!(
                "{name} is not a setting the handler reads (ignored); did you mean {known}?"
            ),
            None => format!(
                "{name} is not a setting the handler reads (ignored); `--list-settings` lists them"
            ),
        })
        .collect()
}

/// The known setting nearest to `name` (case-insensitive edit distance), if it is near enough to be a typo:
/// at most a third of the name's characters differ.
fn closest(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    SETTINGS
        .iter()
        .filter(|s| s.name.starts_with("PORTCULLIS_"))
        .map(|s| {
            (
                strsim::levenshtein(&upper, &s.name.to_ascii_uppercase()),
                s.name,
            )
        })
        .min()
        .filter(|(distance, _)| *distance * 3 <= name.len() - "PORTCULLIS_".len())
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn run(pairs: &[(&str, &str)]) -> CheckReport {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let names: Vec<String> = env.keys().cloned().collect();
        check(&|name| env.get(name).cloned(), &names)
    }

    #[test]
    fn every_problem_is_listed_in_one_run_with_the_connection_string_among_them() {
        // First-hour defect 7: a bad connection string was reported only after every other setting was fixed.
        let report = run(&[
            ("PORTCULLIS_SIGNING_KEY", "c2hvcnQ="),
            ("PORTCULLIS_QUEUE", "AccountName=x;Foo=bar"),
            ("PORTCULLIS_MIN_PREFIX_V4", "99"),
        ]);
        assert_eq!(report.problems.len(), 3, "{report:?}");
        assert!(report.problems[0].starts_with("PORTCULLIS_SIGNING_KEY"));
        assert!(report
            .problems
            .iter()
            .any(|p| p.starts_with("PORTCULLIS_MIN_PREFIX_V4")));
        assert!(report
            .problems
            .iter()
            .any(|p| p.contains("PORTCULLIS_QUEUE: ")
                && p.contains("unknown connection string key `foo`")));
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn the_queue_problem_alone_is_reported_once() {
        let report = run(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "AccountName=x;Foo=bar"),
        ]);
        assert_eq!(report.problems.len(), 1, "{report:?}");
    }

    #[test]
    fn a_valid_environment_has_no_problems() {
        let report = run(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
            ("PORTCULLIS_POISON_QUEUE", "an agent setting"),
            ("PATH", "/usr/bin"),
        ]);
        assert_eq!(report, CheckReport::default());
    }

    #[test]
    fn a_typo_is_warned_about_with_the_closest_known_name() {
        let report = run(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
            ("PORTCULLIS_ALOWLIST", "198.51.100.0/24"),
            ("PORTCULLIS_TTL_HGIH", "P1D"),
            ("portcullis_queues", "lower case is another variable"),
            ("PORTCULLIS_SOMETHING_ELSE_ENTIRELY", "x"),
        ]);
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(
            report.warnings,
            [
                "PORTCULLIS_ALOWLIST is not a setting the handler reads (ignored); did you mean PORTCULLIS_ALLOWLIST?",
                "PORTCULLIS_SOMETHING_ELSE_ENTIRELY is not a setting the handler reads (ignored); `--list-settings` lists them",
                "PORTCULLIS_TTL_HGIH is not a setting the handler reads (ignored); did you mean PORTCULLIS_TTL_HIGH?",
            ]
        );
    }

    #[test]
    fn wrong_case_is_a_typo_too() {
        let warnings = unknown_names(&["PORTCULLIS_QUEUE__QUEUESERVICEURI".to_owned()]);
        assert_eq!(
            warnings,
            ["PORTCULLIS_QUEUE__QUEUESERVICEURI is not a setting the handler reads (ignored); did you mean PORTCULLIS_QUEUE__queueServiceUri?"]
        );
    }
}
