//! Latency percentiles from a sorted vector of samples (microseconds).

use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    micros: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Duration) {
        self.push_micros(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn push_micros(&mut self, us: u64) {
        self.micros.push(us);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The `p`-th percentile (0 < p ≤ 100, nearest rank), in milliseconds; `NaN` without samples.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
        let n = self.micros.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.micros[index] as f64 / 1000.0
    }

    pub fn p50_ms(&mut self) -> f64 {
        self.percentile_ms(50.0)
    }

    pub fn p99_ms(&mut self) -> f64 {
        self.percentile_ms(99.0)
    }

    pub fn max_ms(&mut self) -> f64 {
        self.percentile_ms(100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut l = Latencies::new();
        for us in 1..=100 {
            l.push_micros(us * 1000);
        }
        assert_eq!(l.p50_ms(), 50.0);
        assert_eq!(l.p99_ms(), 99.0);
        assert_eq!(l.max_ms(), 100.0);
        assert!(Latencies::new().p50_ms().is_nan());
    }
}
