//! Test support (feature `testing`): a real Azurite queue service on a free loopback port.
//!
//! Used by the handler's and the agent's integration tests and benchmarks, never by the binaries. The
//! emulator comes from `.tools/` (`scripts/tools.sh`, run by `make test`), or from `AZURITE_QUEUE_BIN`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::connection::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};

/// A running Azurite queue service, stopped on drop.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Set (to anything) by `make test` and CI: a test whose environment is missing fails instead of being
/// skipped, so nothing passes there without running.
pub const REQUIRE_ALL: &str = "PORTCULLIS_TEST_REQUIRE_ALL";

/// Reports a test that cannot run here: printed as `SKIPPED` (plain `cargo test` as a normal user), or a
/// failure when [`REQUIRE_ALL`] is set. Use through [`require!`](crate::require).
pub fn skipped(why: &str) {
    if std::env::var_os(REQUIRE_ALL).is_some() {
        panic!("cannot run ({REQUIRE_ALL} is set): {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Returns from the calling test, after [`skipped`], when `check` is an `Err(reason)`.
#[macro_export]
macro_rules! require {
    ($check:expr) => {
        if let Err(why) = $check {
            $crate::testing::skipped(&why);
            return;
        }
    };
}

/// Whether the Azurite emulator is installed (`make tools`), for [`require!`](crate::require).
pub fn azurite_available() -> Result<(), String> {
    if std::env::var_os("AZURITE_QUEUE_BIN").is_some() {
        return Ok(());
    }
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    loop {
        if dir.join(".tools/node_modules/.bin/azurite-queue").exists() {
            return Ok(());
        }
        if !dir.pop() {
            return Err("needs Azurite: run `make tools` (or `make test`) first".to_owned());
        }
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Where `azurite-queue` is: `AZURITE_QUEUE_BIN`, or `.tools/node_modules/.bin/azurite-queue` in the workspace.
pub fn azurite_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("AZURITE_QUEUE_BIN") {
        return PathBuf::from(bin);
    }
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    loop {
        let candidate = dir.join(".tools/node_modules/.bin/azurite-queue");
        if candidate.exists() {
            return candidate;
        }
        assert!(
            dir.pop(),
            "azurite-queue not found: run `bash scripts/tools.sh` (or `make test`) first"
        );
    }
}

impl Azurite {
    /// Starts Azurite over HTTP with disk persistence in a fresh temporary directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts Azurite with extra arguments (e.g. `--oauth basic --cert … --key …` for HTTPS).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let child = Command::new(azurite_bin())
            .args([
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                &port.to_string(),
                "--location",
            ])
            .arg(dir.path())
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-queue starts");
        let azurite = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Azurite did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        azurite
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account-key connection string for this instance (plain HTTP).
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};QueueEndpoint=http://127.0.0.1:{}/{DEV_ACCOUNT}",
            self.port
        )
    }

    /// The service URL, for HTTPS instances and SAS URLs.
    pub fn service_url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
