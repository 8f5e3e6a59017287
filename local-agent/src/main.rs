//! `portcullis-agent`: parses the command line and hands over to the library (`cli::run`).

use std::process::ExitCode;

use clap::Parser;

// One thread is plenty for an agent that waits on the queue and on nft most of the time, and it keeps
// memory small: each extra runtime worker gets its own glibc malloc arena that holds on to the peak of a
// bulk alert (P6 in BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    portcullis_agent::cli::run(portcullis_agent::cli::Cli::parse()).await
}
