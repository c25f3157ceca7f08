//! A closed-loop HTTP load driver: N workers, each sending its next request when the previous one is
//! answered, bounded by a request count and a duration.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::Latencies;

/// How much load, for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Concurrent workers (each one keeps one request in flight).
    pub workers: usize,
    /// Requests sent but not measured, at the start.
    pub warmup: Duration,
    /// The measured window after the warm-up (the run stops issuing requests at its end).
    pub duration: Duration,
    /// At most this many requests in all (warm-up included).
    pub max_requests: u64,
}

/// What a load run measured (requests started in the measured window).
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Requests answered as expected.
    pub ok: u64,
    /// Requests failed or answered otherwise.
    pub errors: u64,
    /// Requests answered as expected in all, warm-up included.
    pub total: u64,
    /// The first unexpected answer, for the report.
    pub first_error: Option<String>,
    /// From the start of the measured window to the last answer.
    pub elapsed: Duration,
    /// Answered requests per second.
    pub rate: f64,
    /// Latency of the answered requests.
    pub latencies: Latencies,
}

impl LoadResult {
    /// This window's figures and `other`'s together: counts, measured time and latencies add up, and the
    /// rate is over both windows (the default, empty result merged with another is that other one).
    pub fn merge(mut self, other: LoadResult) -> LoadResult {
        self.ok += other.ok;
        self.errors += other.errors;
        self.total += other.total;
        self.first_error = self.first_error.or(other.first_error);
        self.elapsed += other.elapsed;
        self.rate = self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9);
        self.latencies.extend(other.latencies);
        self
    }
}

/// An HTTP client for load: keep-alive connections, no proxy, no Nagle.
pub fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Runs `request(n)` for n = 0, 1, 2, … from `config.workers` workers until `max_requests` were sent or
/// the window ended. `request` returns `Ok(())` for an expected answer, else a description.
pub async fn closed_loop<F, Fut>(config: &LoadConfig, request: F) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measured_from = start + config.warmup;
    let end = measured_from + config.duration;
    let mut workers = Vec::with_capacity(config.workers);
    for _ in 0..config.workers {
        let request = request.clone();
        let next = next.clone();
        let max = config.max_requests;
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let (mut ok, mut errors, mut total, mut first_error) = (0u64, 0u64, 0u64, None);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max {
                    break;
                }
                let outcome = request(n).await;
                let measured = sent >= measured_from;
                match outcome {
                    Ok(()) if measured => {
                        ok += 1;
                        total += 1;
                        latencies.push(sent.elapsed());
                    }
                    Ok(()) => total += 1,
                    Err(e) => {
                        if measured {
                            errors += 1;
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, ok, errors, total, first_error)
        }));
    }
    let mut result = LoadResult::default();
    for worker in workers {
        let (latencies, ok, errors, total, first_error) =
            worker.await.expect("a load worker panicked");
        result.latencies.extend(latencies);
        result.ok += ok;
        result.total += total;
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.elapsed = Instant::now().saturating_duration_since(measured_from);
    result.rate = result.ok as f64 / result.elapsed.as_secs_f64().max(1e-9);
    result
}

/// POSTs `body` to `url` (with extra headers); `Ok` when the answer is 200 and contains `expect`.
pub async fn post_expect(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    expect: &str,
) -> Result<(), String> {
    let mut builder = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let response = builder.send().await.map_err(|e| format!("{e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("{e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if status.as_u16() == 200 && text.contains(expect) {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            text.chars().take(300).collect::<String>()
        ))
    }
}
