//! Command line and environment settings (SPEC §1). Every flag has an environment variable.

use std::fmt;
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::simulate::Scenario;

/// fastpix-sync keeps a live, queryable GraphQL mirror of a FastPix workspace from its webhooks.
#[derive(Debug, Parser)]
#[command(name = "fastpix-sync", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve HTTP until SIGINT/SIGTERM (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) to standard output.
    Schema,
    /// Rebuild the media, live stream and simulcast target tables from the stored event log.
    Replay,
    /// Prune the event log once, as the server does in the background (see --event-retention-days).
    Prune,
    /// Send a realistic, signed FastPix event sequence to a running server.
    Simulate {
        /// Which sequence to send.
        #[arg(value_enum, default_value_t = Scenario::All)]
        scenario: Scenario,
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Signing secret (base64); defaults to the first of FASTPIX_WEBHOOK_SECRET. None sends unsigned.
        #[arg(long, hide_env_values = true)]
        secret: Option<String>,
        /// Milliseconds between events.
        #[arg(long, default_value_t = 1500)]
        pace: u64,
    },
}

/// Settings shared by every command.
#[derive(Clone, Args)]
pub struct Settings {
    /// Address to serve HTTP on.
    #[arg(
        long,
        env = "FASTPIX_SYNC_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://PATH?mode=rwc` (embedded) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://fastpix-sync.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// FastPix signing secret(s), base64 as shown in the dashboard; a comma-separated list while rotating.
    #[arg(
        long,
        env = "FASTPIX_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,

    /// Bearer token that unlocks admin-only GraphQL fields (stream keys, the event log).
    #[arg(
        long,
        env = "FASTPIX_SYNC_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Days of event log to keep (pruned in the background); 0 keeps everything. The newest applied event
    /// of every entity is always kept.
    #[arg(
        long,
        env = "FASTPIX_SYNC_EVENT_RETENTION_DAYS",
        default_value_t = 90,
        global = true
    )]
    pub event_retention_days: u32,

    /// Changes kept for subscribers that fall behind; one that falls further re-reads the database.
    #[arg(
        long,
        env = "FASTPIX_SYNC_BUS_CAPACITY",
        default_value_t = 1024,
        global = true
    )]
    pub bus_capacity: usize,

    /// Log format: `text` for people, `json` for log shippers. The level comes from `RUST_LOG`.
    #[arg(long, env = "FASTPIX_SYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Debug for Settings {
    /// Secrets are never printed, only whether they are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<set>"),
            )
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("bus_capacity", &self.bus_capacity)
            .field("event_retention_days", &self.event_retention_days)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Settings {
    /// Settings for a server on `database_url` with no secrets, listening on an ephemeral loopback port.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            webhook_secret: None,
            admin_token: None,
            bus_capacity: 1024,
            event_retention_days: 90,
            log_format: LogFormat::Text,
        }
    }
}

/// Hides a password in a database URL (`postgres://user:secret@host` → `postgres://user:***@host`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut settings = Settings::for_tests("sqlite::memory:");
        settings.webhook_secret = Some("c2VjcmV0".into());
        settings.admin_token = Some("token-value".into());
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("c2VjcmV0") && !printed.contains("token-value"),
            "{printed}"
        );
    }
}
