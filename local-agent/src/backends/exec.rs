//! Running the firewall's command-line tools (`nft`, `ipset`, `iptables`), directly or inside a network
//! namespace.
//!
//! The local backends shell out rather than link C libraries, which keeps the binary static and
//! cross-compiles simply (see `reference/firewalls.md` §4). A [`Runner`] captures stdout and stderr (nft
//! explains failures only on stderr), feeds stdin from a separate task so large batches cannot deadlock on
//! full pipes, and bounds every call with a timeout.
//!
//! With `netns = "NAME"` every command runs as `ip netns exec NAME <tool> …`: the tests put the firewall in
//! a namespace they create, and users can point the agent at a router namespace.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::BackendError;
use crate::config::ConfigError;

/// Default bound on one command; a 100k-element nft transaction takes well under a second.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status was zero.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error, trimmed.
    pub stderr: String,
}

/// Runs tools, optionally inside a network namespace.
#[derive(Debug, Clone)]
pub struct Runner {
    netns: Option<String>,
    timeout: Duration,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new(None)
    }
}

/// Checks a namespace name the way `ip netns` accepts it (a file name under `/run/netns`).
pub fn validate_netns(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("`{name}` is not a network namespace name (letters, digits, `-`, `_`, `.`)"),
        ))
    }
}

impl Runner {
    /// A runner for the given namespace (`None` = the agent's own).
    pub fn new(netns: Option<String>) -> Self {
        Self {
            netns,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The namespace commands run in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    fn describe(&self, program: &str) -> String {
        match &self.netns {
            Some(ns) => format!("`{program}` in network namespace `{ns}`"),
            None => format!("`{program}`"),
        }
    }

    fn spawn_error(&self, program: &str, err: &std::io::Error) -> BackendError {
        let launcher = if self.netns.is_some() { "ip" } else { program };
        if err.kind() == std::io::ErrorKind::NotFound {
            BackendError::Unreachable(format!(
                "`{launcher}` not found in PATH (install {})",
                if launcher == "ip" {
                    "iproute2"
                } else {
                    program
                }
            ))
        } else {
            BackendError::Unreachable(format!("cannot run {}: {err}", self.describe(program)))
        }
    }

    /// Runs `program args…`, writing `stdin` to it, and returns what it printed. A non-zero exit is not an
    /// error here (callers decide); failing to start or timing out is [`BackendError::Unreachable`].
    pub async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, BackendError> {
        let mut command = self.command(program, args);
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().map_err(|e| self.spawn_error(program, &e))?;
        let writer = match (stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(tokio::spawn(async move {
                let result = pipe.write_all(&bytes).await;
                drop(pipe);
                result
            })),
            _ => None,
        };
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                BackendError::Unreachable(format!(
                    "{} did not finish within {:?}",
                    self.describe(program),
                    self.timeout
                ))
            })?
            .map_err(|e| self.spawn_error(program, &e))?;
        if let Some(writer) = writer {
            // A tool that exits early closes its stdin; the exit status and stderr explain why.
            let _ = writer.await;
        }
        Ok(Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// Runs a command that must succeed; a failure becomes [`BackendError::Rejected`] carrying stderr.
    pub async fn run_ok(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, BackendError> {
        let output = self.run(program, args, stdin).await?;
        if output.success {
            Ok(output)
        } else {
            Err(BackendError::Rejected(format!(
                "{} {}: {}",
                self.describe(program),
                args.join(" "),
                first_lines(&output.stderr, 6)
            )))
        }
    }

    /// Runs a command and hands its stdout to `line` one line at a time, so listing 100k set elements
    /// never holds the whole text. Fails with [`BackendError::Rejected`] on a non-zero exit.
    pub async fn run_lines(
        &self,
        program: &str,
        args: &[&str],
        mut line: impl FnMut(&str) + Send,
    ) -> Result<(), BackendError> {
        let mut child = self
            .command(program, args)
            .spawn()
            .map_err(|e| self.spawn_error(program, &e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_task = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let read = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(text) = lines.next_line().await? {
                line(&text);
            }
            child.wait().await
        };
        let status = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| {
                BackendError::Unreachable(format!(
                    "{} did not finish within {:?}",
                    self.describe(program),
                    self.timeout
                ))
            })?
            .map_err(|e| self.spawn_error(program, &e))?;
        let stderr = err_task.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(BackendError::Rejected(format!(
                "{} {}: {}",
                self.describe(program),
                args.join(" "),
                first_lines(stderr.trim(), 6)
            )))
        }
    }

    /// Reads a file as seen from the namespace (`/proc/net/…` differs per namespace): directly without a
    /// namespace, through `cat` inside one.
    pub async fn read_file(&self, path: &str) -> Result<String, BackendError> {
        match &self.netns {
            None => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| BackendError::Unreachable(format!("cannot read {path}: {e}"))),
            Some(_) => Ok(self.run_ok("cat", &[path], None).await?.stdout),
        }
    }
}

/// The first `n` lines of a tool's stderr on one line, joined with ` | `. nft's caret diagrams (the input line,
/// then a line of `^`/`~` under the part at fault) become `[at: <the marked text>]` on the error line before
/// them: joined onto one line, the carets would no longer point at anything.
pub fn first_lines(text: &str, n: usize) -> String {
    let raw: Vec<&str> = text.lines().collect();
    let mut lines: Vec<String> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if let Some(carets) = raw.get(i + 1).filter(|l| is_caret_line(l)) {
            let at = format!("[at: {}]", underlined(raw[i], carets));
            match lines.last_mut() {
                Some(error) => {
                    error.push(' ');
                    error.push_str(&at);
                }
                None => lines.push(at),
            }
            i += 2;
            continue;
        }
        lines.push(raw[i].to_owned());
        i += 1;
    }
    if lines.len() > n {
        lines.truncate(n);
        lines.push("…".to_owned());
    }
    lines.join(" | ")
}

/// A line of only `^` and `~` (and spaces): nft's marker under the text it complains about.
fn is_caret_line(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && t.chars().all(|c| c == '^' || c == '~')
}

/// The characters of `source` above the markers, at most 60 of them.
fn underlined(source: &str, carets: &str) -> String {
    let marked: String = source
        .chars()
        .zip(carets.chars().chain(std::iter::repeat(' ')))
        .filter(|(_, mark)| *mark == '^' || *mark == '~')
        .map(|(c, _)| c)
        .collect();
    let marked = marked.trim();
    match marked.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &marked[..cut]),
        None => marked.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // First-hour defect 9: `check` pasted nft's caret diagram onto one line, carets pointing at nothing.
    #[test]
    fn nft_caret_diagrams_become_the_marked_text() {
        let stderr = [
            "/dev/stdin:2:18-27: Error: Could not process rule: No such file or directory"
                .to_owned(),
            "add element inet portcullis addr4 { 198.51.100.7 }".to_owned(),
            format!("{}{}", " ".repeat(17), "^".repeat(10)),
            "/dev/stdin:3:1-3: Error: syntax error, unexpected junk".to_owned(),
            "foo bar".to_owned(),
            "^^^~~~~".to_owned(),
        ]
        .join("\n");
        let stderr = stderr.as_str();
        assert_eq!(
            first_lines(stderr, 6),
            "/dev/stdin:2:18-27: Error: Could not process rule: No such file or directory [at: portcullis] | \
             /dev/stdin:3:1-3: Error: syntax error, unexpected junk [at: foo bar]"
        );
        // Plain text is joined as before, and cut after n lines.
        assert_eq!(first_lines("a\nb\nc", 2), "a | b | …");
        assert_eq!(
            first_lines("ipset v7.17: Set cannot be created", 6),
            "ipset v7.17: Set cannot be created"
        );
    }

    #[tokio::test]
    async fn captures_stdout_stderr_and_stdin() {
        let runner = Runner::default();
        let out = runner
            .run(
                "sh",
                &["-c", "cat; echo oops >&2; exit 3"],
                Some(b"hello".to_vec()),
            )
            .await
            .unwrap();
        assert!(!out.success);
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "oops");
        let err = runner
            .run_ok("sh", &["-c", "echo bad >&2; exit 1"], None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Rejected(ref t) if t.contains("bad")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn large_stdin_does_not_deadlock() {
        let bytes = vec![b'x'; 4 << 20];
        let out = Runner::default()
            .run("sh", &["-c", "wc -c; echo done >&2"], Some(bytes))
            .await
            .unwrap();
        assert_eq!(out.stdout.trim(), (4 << 20).to_string());
    }

    #[tokio::test]
    async fn lines_are_streamed() {
        let mut seen = Vec::new();
        Runner::default()
            .run_lines("sh", &["-c", "printf 'a\\nb\\nc\\n'"], |l| {
                seen.push(l.to_owned())
            })
            .await
            .unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_missing_tool_is_unreachable() {
        let err = Runner::default()
            .run("portcullis-no-such-tool", &[], None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Unreachable(ref t) if t.contains("not found")),
            "{err}"
        );
    }

    #[test]
    fn namespace_names_are_checked() {
        assert!(validate_netns("k", "pc-test_1.a").is_ok());
        for bad in ["", "..", "a/b", "a b", "x;rm"] {
            assert!(validate_netns("k", bad).is_err(), "{bad}");
        }
    }
}
