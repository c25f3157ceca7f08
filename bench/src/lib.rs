//! Benchmarks of fastpix-sync, each measured side by side with a baseline in the same run (issue 6).
//!
//! The scenarios start the real server (the release binary as a child process, or in-process for the
//! smoke test) and drive it with real HTTP and websocket clients over 127.0.0.1:
//!
//! - [`scenarios::ingest`]: signed, unique webhooks/s and ack latency at N concurrent senders, against a
//!   bare axum handler inserting one row per request with the same durability.
//! - [`scenarios::fanout`]: webhook POST → frame at every `liveStream` subscriber, against a tokio
//!   broadcast + plain websocket server pushing the same bytes.
//! - [`scenarios::idle`]: RSS growth per idle subscription, against bare websocket connections.
//! - [`scenarios::query`]: `mediaByPlaybackId` requests/s, against `{ __typename }` on the same server.
//!
//! Every loop is bounded in count and in time.

pub mod baseline;
pub mod bodies;
pub mod crowd;
pub mod db;
pub mod load;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod stats;

/// Errors of the harness: any error, with a message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Raises the soft limit on open files to the hard limit (children inherit it); returns the new limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The machine, for the report: CPU model, cores, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, v)| v.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{model}, {cores} cores (nproc), {mem_gib:.1} GiB RAM")
}
