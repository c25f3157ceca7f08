//! The `fastpix-sync` command: parse the command line, set up logging, run the chosen command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use fastpix_sync::app::Application;
use fastpix_sync::config::{Cli, Command, LogFormat, Settings};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: intake and fan-out allocate many small, short-lived buffers
/// on several threads, where glibc's malloc took about a fifth of the server's CPU (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.settings.log_format);
    match run(cli.command.unwrap_or(Command::Serve), &cli.settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("fastpix-sync: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Migrate => {
            fastpix_sync::db::connect_and_migrate(&settings.database_url).await?;
            println!("migrations applied");
        }
        Command::Schema => print!("{}", fastpix_sync::graphql::sdl()),
        Command::Simulate {
            scenario,
            url,
            secret,
            pace,
        } => {
            let secret = secret.or_else(|| {
                let configured = settings.webhook_secret.as_deref()?;
                configured
                    .split(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty())
                    .map(str::to_owned)
            });
            fastpix_sync::simulate::run(
                scenario,
                &url,
                secret.as_deref(),
                std::time::Duration::from_millis(pace),
                &mut std::io::stdout(),
            )
            .await?;
        }
        Command::Prune => {
            let db = fastpix_sync::db::connect_and_migrate(&settings.database_url).await?;
            let pruned = fastpix_sync::retention::prune(&db, settings.event_retention_days).await?;
            println!(
                "pruned {} events; kept every old event of {} entities that need them",
                pruned.deleted, pruned.kept_entities
            );
        }
        Command::Replay => {
            let db = fastpix_sync::db::connect_and_migrate(&settings.database_url).await?;
            let replayed = fastpix_sync::replay::replay(&db).await?;
            println!(
                "replayed {} events ({} applied)",
                replayed.events, replayed.applied
            );
        }
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: draining in-flight requests");
}
