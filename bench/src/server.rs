//! Starting and stopping the servers under test: fastpix-sync and the baselines, each either as a child
//! process (the full run: its RSS is its own, and it has its own runtime) or in this process (the smoke
//! test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fastpix_sync::app::Application;
use fastpix_sync::config::Settings;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Result;
use crate::bodies::SECRET;

/// How servers are started.
#[derive(Clone, Debug)]
pub enum Launch {
    /// In this process, on this runtime (smoke test; no separate RSS).
    InProcess,
    /// As child processes: fastpix-sync from `server_bin`, the baselines as `bench_bin serve-baseline …`.
    /// Their logs go to files in `log_dir`.
    Process {
        server_bin: PathBuf,
        bench_bin: PathBuf,
        log_dir: PathBuf,
    },
}

/// Which baseline server.
#[derive(Clone, Debug)]
pub enum BaselineKind {
    Ingest {
        database_url: String,
    },
    /// Broadcast + plain websockets; with a database, committing each frame there before sending it.
    Fanout {
        database_url: Option<String>,
    },
}

impl BaselineKind {
    /// The fan-out baseline of the target, without a database.
    pub const FANOUT: Self = Self::Fanout { database_url: None };
}

enum Running {
    Child(Child),
    Task {
        stop: Option<oneshot::Sender<()>>,
        join: JoinHandle<()>,
    },
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The server's process (this process when in-process).
    pub pid: u32,
    /// Whether `pid` is a process of the server's own (its RSS is the server's).
    pub own_process: bool,
    log: Option<PathBuf>,
    running: Running,
}

impl Server {
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Resident set size of the server's process, in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    /// CPU time (user + system) the server's process used so far; `None` when in-process.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.own_process.then(|| cpu_time(self.pid)).flatten()
    }

    /// The last lines of a child's log (for errors).
    pub fn log_tail(&self) -> String {
        self.log.as_deref().map(log_tail).unwrap_or_default()
    }

    /// Stops the server: SIGTERM (a child) or its shutdown future (in-process), then waits up to 10 s;
    /// a child still running then is killed.
    pub async fn stop(self) {
        match self.running {
            Running::Child(mut child) => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(self.pid.to_string())
                    .status()
                    .await;
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            Running::Task { mut stop, join } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let abort = join.abort_handle();
                if tokio::time::timeout(Duration::from_secs(10), join)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
        }
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system, all threads) of a process, from `/proc/<pid>/stat` (USER_HZ = 100).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A free port on 127.0.0.1 (bound, then released for the child to bind).
async fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

/// Waits until `GET /healthz` answers 200 (up to 60 s), or the child exits.
async fn wait_healthy(addr: SocketAddr, child: &mut Option<&mut Child>) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("http://{addr}/healthz");
    while Instant::now() < deadline {
        if let Some(child) = child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            return Err(format!("the server exited with {status}").into());
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the server at {addr} did not answer /healthz within 60 s").into())
}

/// Spawns `command` listening on a free port (retried on a port race), waits until it is healthy.
async fn spawn_child(mut make: impl FnMut(SocketAddr) -> Command, log: PathBuf) -> Result<Server> {
    let mut last_error = String::new();
    for _ in 0..3 {
        let addr = free_addr().await?;
        let log_file = std::fs::File::create(&log)?;
        let mut command = make(addr);
        let program = command.as_std().get_program().to_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("the child has no pid")?;
        match wait_healthy(addr, &mut Some(&mut child)).await {
            Ok(()) => {
                return Ok(Server {
                    addr,
                    pid,
                    own_process: true,
                    log: Some(log),
                    running: Running::Child(child),
                });
            }
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                last_error = format!("{e}\n{}", log_tail(&log));
            }
        }
    }
    Err(format!("cannot start {}: {last_error}", log.display()).into())
}

/// Runs the server `serve` makes (given the signal to shut down) as a task of this process, and waits
/// until it answers on `addr`.
async fn spawn_task<F>(
    addr: SocketAddr,
    serve: impl FnOnce(oneshot::Receiver<()>) -> F,
) -> Result<Server>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let join = tokio::spawn(serve(stopped));
    wait_healthy(addr, &mut None).await?;
    Ok(Server {
        addr,
        pid: std::process::id(),
        own_process: false,
        log: None,
        running: Running::Task {
            stop: Some(stop),
            join,
        },
    })
}

/// Starts fastpix-sync on `database_url` with the benchmark's signing secret.
pub async fn start_ours(launch: &Launch, database_url: &str, label: &str) -> Result<Server> {
    match launch {
        Launch::Process {
            server_bin,
            log_dir,
            ..
        } => {
            let log = log_dir.join(format!("fastpix-sync-{label}.log"));
            spawn_child(
                |addr| {
                    let mut command = Command::new(server_bin);
                    command
                        .arg("serve")
                        .env("DATABASE_URL", database_url)
                        .env("FASTPIX_SYNC_LISTEN", addr.to_string())
                        .env("FASTPIX_WEBHOOK_SECRET", SECRET)
                        .env_remove("FASTPIX_SYNC_ADMIN_TOKEN")
                        .env_remove("FASTPIX_SYNC_BUS_CAPACITY")
                        .env_remove("FASTPIX_SYNC_LOG_FORMAT")
                        .env_remove("RUST_LOG");
                    command
                },
                log,
            )
            .await
        }
        Launch::InProcess => {
            let mut settings = Settings::for_tests(database_url.to_owned());
            settings.webhook_secret = Some(SECRET.to_owned());
            let app = Application::build(&settings).await?;
            let addr = app.local_addr();
            spawn_task(addr, |stopped| async move {
                let _ = app
                    .run_until(async {
                        let _ = stopped.await;
                    })
                    .await;
            })
            .await
        }
    }
}

/// Starts a baseline server.
pub async fn start_baseline(launch: &Launch, kind: &BaselineKind, label: &str) -> Result<Server> {
    match launch {
        Launch::Process {
            bench_bin, log_dir, ..
        } => {
            let log = log_dir.join(format!("baseline-{label}.log"));
            spawn_child(
                |addr| {
                    let mut command = Command::new(bench_bin);
                    command.arg("serve-baseline");
                    match kind {
                        BaselineKind::Ingest { database_url } => {
                            command.args(["ingest", "--database-url", database_url]);
                        }
                        BaselineKind::Fanout { database_url } => {
                            command.arg("fanout");
                            if let Some(url) = database_url {
                                command.args(["--database-url", url]);
                            }
                        }
                    }
                    command.args(["--listen", &addr.to_string()]);
                    command
                },
                log,
            )
            .await
        }
        Launch::InProcess => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let kind = kind.clone();
            spawn_task(addr, |stopped| async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                let result = match kind {
                    BaselineKind::Ingest { database_url } => {
                        crate::baseline::serve_ingest(listener, &database_url, shutdown).await
                    }
                    BaselineKind::Fanout { database_url } => {
                        crate::baseline::serve_fanout(listener, database_url.as_deref(), shutdown)
                            .await
                    }
                };
                if let Err(e) = result {
                    eprintln!("baseline server: {e}");
                }
            })
            .await
        }
    }
}
