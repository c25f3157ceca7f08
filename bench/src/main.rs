//! `cargo run --release -p bench -- all` (or `ingest`, `fanout`, `idle`, `query`; `--quick` for small
//! sizes): runs the scenarios against the release binary of fastpix-sync and their baselines, prints the
//! results table and writes it to `bench/results.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use bench::db::Backend;
use bench::report::{self, Row};
use bench::scenarios::{self, Sizes};
use bench::server::Launch;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "fastpix-sync benchmarks against baselines (issue 6)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario.
    All(RunArgs),
    /// Signed webhooks/s and ack latency, SQLite and PostgreSQL, vs a bare insert handler.
    Ingest(RunArgs),
    /// Webhook → frame at 100, 1,000, 10,000 subscribers, vs broadcast + plain websockets (and, for
    /// comparison, the same committing each frame to SQLite first).
    Fanout(RunArgs),
    /// RSS per idle subscription at 10,000, vs bare websocket connections.
    Idle(RunArgs),
    /// `mediaByPlaybackId` requests/s vs `{ __typename }`.
    Query(RunArgs),
    /// Serve a baseline (the harness starts these itself).
    ServeBaseline {
        #[arg(value_enum)]
        kind: BaselineArg,
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The database: required for `ingest`; for `fanout`, makes it commit each frame there first.
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BaselineArg {
    Ingest,
    Fanout,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Tiny sizes, to try the harness (figures not comparable with a full run).
    #[arg(long)]
    quick: bool,
    /// PostgreSQL server for the ingest scenario (its user must be allowed to create databases).
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Skip PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
    /// The fastpix-sync binary (default: `fastpix-sync` next to this one, built first with cargo).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where to write the table.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results.md"))]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (which, args) = match cli.command {
        Command::ServeBaseline {
            kind,
            listen,
            database_url,
        } => return serve_baseline(kind, listen, database_url).await,
        Command::All(a) => ("all", a),
        Command::Ingest(a) => ("ingest", a),
        Command::Fanout(a) => ("fanout", a),
        Command::Idle(a) => ("idle", a),
        Command::Query(a) => ("query", a),
    };
    match run(which, args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_baseline(
    kind: BaselineArg,
    listen: std::net::SocketAddr,
    database_url: Option<String>,
) -> ExitCode {
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let result = async {
        let listener = TcpListener::bind(listen).await?;
        match kind {
            BaselineArg::Ingest => {
                let url = database_url.ok_or("--database-url is required")?;
                bench::baseline::serve_ingest(listener, &url, shutdown).await
            }
            BaselineArg::Fanout => {
                bench::baseline::serve_fanout(listener, database_url.as_deref(), shutdown).await
            }
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The fastpix-sync binary next to this one, built (or brought up to date) with cargo first.
fn server_binary() -> bench::Result<PathBuf> {
    let bench_bin = std::env::current_exe()?;
    let profile_dir = bench_bin.parent().ok_or("no folder")?;
    let target_dir = profile_dir.parent().ok_or("no target folder")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if !release {
        eprintln!("bench: warning: not a release build; run with `cargo run --release -p bench`");
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "fastpix-sync",
            "--bin",
            "fastpix-sync",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        command.arg("--release");
    }
    eprintln!("bench: building fastpix-sync ({})", profile_dir.display());
    let status = command.status()?;
    if !status.success() {
        return Err(format!("building fastpix-sync failed: {status}").into());
    }
    Ok(profile_dir.join("fastpix-sync"))
}

async fn run(which: &str, args: RunArgs) -> bench::Result<()> {
    let started = Instant::now();
    let fd_limit = bench::raise_fd_limit();
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => server_binary()?,
    };
    let log_dir = tempfile::Builder::new()
        .prefix("fastpix-bench-logs-")
        .tempdir()?;
    let launch = Launch::Process {
        server_bin,
        bench_bin: std::env::current_exe()?,
        log_dir: log_dir.path().to_owned(),
    };
    let needed = sizes
        .idle
        .max(sizes.fanout.iter().map(|f| f.0).max().unwrap_or(0));
    if (fd_limit as usize) < needed + 1000 {
        return Err(format!(
            "the open-file limit is {fd_limit}; {needed} connections need at least {}",
            needed + 1000
        )
        .into());
    }
    let all = which == "all";
    let mut rows: Vec<Row> = Vec::new();

    if all || which == "ingest" {
        let mut backends = vec![Backend::Sqlite];
        if !args.no_postgres {
            backends.push(Backend::Postgres {
                admin_url: args.postgres_url.clone(),
            });
        }
        for backend in backends {
            eprintln!("bench: ingest on {}", backend.label());
            match scenarios::ingest(&launch, &backend, &sizes.ingest).await {
                Ok(mut outcome) => rows.extend(outcome.rows()),
                Err(e) => rows.push(Row::not_run(
                    format!("ingest, {}", backend.label()),
                    "webhooks/s",
                    format!("not run: {e}"),
                )),
            }
        }
    }
    if all || which == "fanout" {
        for &(subscribers, changes) in &sizes.fanout {
            eprintln!("bench: fan-out to {subscribers} subscribers");
            let mut outcome = scenarios::fanout(&launch, subscribers, changes, &sizes).await?;
            rows.extend(outcome.rows());
        }
    }
    if all || which == "idle" {
        eprintln!("bench: {} idle connections", sizes.idle);
        rows.extend(scenarios::idle(&launch, &sizes).await?.rows());
    }
    if all || which == "query" {
        eprintln!("bench: queries");
        rows.extend(scenarios::query(&launch, &sizes).await?.rows());
    }

    let elapsed = started.elapsed();
    let table = report::table(&rows);
    let notes = report::notes(&rows);
    let met = rows.iter().filter(|r| r.met() == Some(true)).count();
    let judged = rows.iter().filter(|r| r.met().is_some()).count();
    let text = format!(
        "# fastpix-sync benchmark results\n\n\
         `bench {which}{}`, {} s wall time, on {}.\n\n{table}\n\
         Targets met: {met} of {judged}.\n\n{notes}",
        if args.quick { " --quick" } else { "" },
        elapsed.as_secs(),
        bench::machine(),
    );
    println!("{text}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &text)?;
    eprintln!("bench: wrote {}", args.out.display());
    // The table is written either way; the exit status tells a script that part of it is missing.
    let not_run: Vec<&str> = rows
        .iter()
        .filter(|row| !row.ran())
        .map(|row| row.scenario.as_str())
        .collect();
    if !not_run.is_empty() {
        return Err(format!("not run: {} (the table says why)", not_run.join(", ")).into());
    }
    Ok(())
}
