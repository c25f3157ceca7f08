//! The results table: scenario, measure, ours, baseline, ratio, target, met?

use std::fmt::Write as _;

/// How a row's target is judged.
#[derive(Clone, Debug)]
pub enum Target {
    /// No target: shown for context.
    None,
    /// ours / baseline ≥ this (rates).
    RatioAtLeast(f64),
    /// ours / baseline ≤ this (latencies, memory).
    RatioAtMost(f64),
    /// ours ≤ this absolute value.
    AtMost(f64),
    /// ours / baseline ≤ ratio and ours ≤ value.
    RatioAtMostAndAtMost(f64, f64),
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub measure: String,
    /// Unit shown after the values ("/s", "ms", "KiB").
    pub unit: &'static str,
    pub ours: Option<f64>,
    pub baseline: Option<f64>,
    pub target: Target,
    /// Why the row has no figures (for example PostgreSQL absent), or a caveat.
    pub note: Option<String>,
}

impl Row {
    pub fn new(
        scenario: impl Into<String>,
        measure: impl Into<String>,
        unit: &'static str,
        ours: f64,
        baseline: f64,
        target: Target,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            measure: measure.into(),
            unit,
            ours: Some(ours).filter(|v| v.is_finite()),
            baseline: Some(baseline).filter(|v| v.is_finite()),
            target,
            note: None,
        }
    }

    pub fn not_run(scenario: impl Into<String>, measure: impl Into<String>, why: String) -> Self {
        Self {
            scenario: scenario.into(),
            measure: measure.into(),
            unit: "",
            ours: None,
            baseline: None,
            target: Target::None,
            note: Some(why),
        }
    }

    /// Whether the row has figures: `false` for a scenario that did not run.
    pub fn ran(&self) -> bool {
        self.ours.is_some() || self.baseline.is_some()
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        match (self.ours, self.baseline) {
            (Some(o), Some(b)) if b > 0.0 => Some(o / b),
            _ => None,
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target or no figures.
    pub fn met(&self) -> Option<bool> {
        let ours = self.ours?;
        let ratio = self.ratio();
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(r) => Some(ratio? >= r),
            Target::RatioAtMost(r) => Some(ratio? <= r),
            Target::AtMost(v) => Some(ours <= v),
            Target::RatioAtMostAndAtMost(r, v) => Some(ratio? <= r && ours <= v),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "–".into(),
            Target::RatioAtLeast(r) => format!("≥ {r}× baseline"),
            Target::RatioAtMost(r) => format!("≤ {r}× baseline"),
            Target::AtMost(v) => format!("≤ {} {}", number(v), self.unit),
            Target::RatioAtMostAndAtMost(r, v) => {
                format!("≤ {r}× baseline and ≤ {} {}", number(v), self.unit)
            }
        }
    }
}

fn number(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn value(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) => format!("{} {unit}", number(v)).trim_end().to_owned(),
        None => "–".into(),
    }
}

/// The markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | measure | ours | baseline | ratio | target | met? |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for row in rows {
        let met = match row.met() {
            Some(true) => "yes".to_owned(),
            Some(false) => "**no**".to_owned(),
            None => "–".to_owned(),
        };
        let mut measure = row.measure.clone();
        if let Some(note) = &row.note
            && row.ours.is_none()
        {
            let _ = write!(measure, " ({note})");
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            measure,
            value(row.ours, row.unit),
            value(row.baseline, row.unit),
            row.ratio().map_or("–".into(), |r| format!("{r:.2}×")),
            row.target_text(),
            met,
        );
    }
    out
}

/// Notes of the rows that have figures and a note.
pub fn notes(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        if let (Some(note), Some(_)) = (&row.note, row.ours) {
            let _ = writeln!(out, "- {} / {}: {note}", row.scenario, row.measure);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_judged() {
        let rate = Row::new("i", "rate", "/s", 70.0, 100.0, Target::RatioAtLeast(0.7));
        assert_eq!(rate.met(), Some(true));
        let p99 = Row::new(
            "f",
            "p99",
            "ms",
            120.0,
            50.0,
            Target::RatioAtMostAndAtMost(2.0, 100.0),
        );
        assert_eq!(p99.met(), Some(false));
        let info = Row::new("f", "p50", "ms", 1.0, 1.0, Target::None);
        assert_eq!(info.met(), None);
        assert!(table(&[rate, p99, info]).contains("| **no** |"));
    }

    #[test]
    fn a_scenario_that_did_not_run_has_no_figures() {
        assert!(!Row::not_run("i", "rate", "PostgreSQL absent".into()).ran());
        assert!(Row::new("i", "rate", "/s", 70.0, 100.0, Target::None).ran());
        // A figure that could not be computed (no samples) is not a scenario that did not run.
        assert!(Row::new("i", "p99", "ms", f64::NAN, 1.0, Target::None).ran());
    }
}
