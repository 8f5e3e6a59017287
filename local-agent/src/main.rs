//! `portcullis-agent`: parses the command line and hands over to the library (`cli::run`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    portcullis_agent::cli::run(portcullis_agent::cli::Cli::parse()).await
}
