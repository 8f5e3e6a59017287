//! `portcullis-handler`: the Azure Functions custom handler binary. Reads settings, starts logging, serves
//! [`portcullis::app`] on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` (or `--listen`) until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

/// Azure Functions custom handler: turns Sentinel and Azure Monitor alerts into signed block messages on
/// Azure Storage Queues. Configured through environment variables (see --list-settings).
#[derive(Debug, Parser)]
#[command(name = "portcullis-handler", version)]
struct Args {
    /// Listen on this address instead of 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Print every setting as a JSON array of {name, required, default, description} and exit.
    #[arg(long)]
    list_settings: bool,
    /// Validate the settings, list every problem and every unknown PORTCULLIS_* name, and exit (0 = valid).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_settings {
        println!("{}", portcullis::settings::list_settings_json());
        return ExitCode::SUCCESS;
    }
    if args.check {
        return check();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `--check`: every problem and warning, one per line; exit 2 when there is a problem.
fn check() -> ExitCode {
    let report = portcullis::check::check(&|name| std::env::var(name).ok(), &env_names());
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if report.problems.is_empty() {
        println!("settings are valid");
        let state = portcullis::Settings::from_env()
            .ok()
            .and_then(|settings| portcullis::AppState::from_settings(&settings).ok());
        if let Some(reports) = state.as_ref().and_then(|(state, _)| state.reports.as_ref()) {
            println!("{}", reports.describe());
        }
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "error: invalid settings ({} problem(s)):",
        report.problems.len()
    );
    for problem in &report.problems {
        eprintln!("  {problem}");
    }
    ExitCode::from(2)
}

/// Names of the environment variables (values are not read here: some are secrets).
fn env_names() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let settings = portcullis::Settings::from_env().context("invalid settings")?;
    let (state, queues) = portcullis::AppState::from_settings(&settings)
        .map_err(anyhow::Error::msg)
        .context("invalid settings")?;
    let addr = match (args.listen, settings.port) {
        (Some(addr), _) => addr,
        (None, Some(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
        (None, None) => anyhow::bail!(
            "nowhere to listen: set FUNCTIONS_CUSTOMHANDLER_PORT (the Functions host does) or pass --listen ADDR"
        ),
    };
    portcullis::telemetry::init(settings.log_format, &settings.log_filter);
    for warning in portcullis::check::unknown_names(&env_names()) {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        %addr,
        queues = ?state.queues.queue_names(),
        kid = state.signing_key.id(),
        "Handler listening."
    );
    if let Some(reports) = &state.reports {
        if reports.has_sink() {
            tracing::info!(queue = %settings.reports.queue, "{}", reports.describe());
            if std::env::var_os("IDENTITY_ENDPOINT").is_none() {
                tracing::warn!(
                    "IDENTITY_ENDPOINT is not set (not in App Service / Functions?): return-path tokens will be asked of the instance metadata service, and reports fail and retry if it is absent. Set PORTCULLIS_SENTINEL_COMMENTS=false and leave the logs settings unset to run without the return path."
                );
            }
        } else {
            tracing::warn!(queue = %settings.reports.queue, "{}", reports.describe());
        }
    }
    if settings.create_queues {
        // In the background: readiness must not wait for the queue service.
        tokio::spawn(async move {
            match queues.create_missing().await {
                Ok(()) => tracing::info!("Queues exist."),
                Err(err) => {
                    tracing::warn!(error = %err, "Cannot create queues yet; will retry on first send.")
                }
            }
        });
    }
    portcullis::serve(
        listener,
        portcullis::app(Arc::new(state)),
        portcullis::shutdown_signal(),
    )
    .await
    .context("serving")?;
    tracing::info!("Handler stopped.");
    Ok(())
}
