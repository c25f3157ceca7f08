//! The command line: secure defaults and the schema file.

use std::process::Command;

fn fastpix_sync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fastpix-sync"));
    command
        .env_remove("FASTPIX_WEBHOOK_SECRET")
        .env_remove("FASTPIX_SYNC_LISTEN")
        .env_remove("DATABASE_URL");
    command
}

#[test]
fn no_secret_on_a_public_address_refuses_to_start_and_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = fastpix_sync()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/x.db?mode=rwc", dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FASTPIX_WEBHOOK_SECRET"), "{stderr}");
}

#[test]
fn a_secret_that_is_not_base64_refuses_to_start() {
    let output = fastpix_sync()
        .args(["serve", "--webhook-secret", "not base64!"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FASTPIX_WEBHOOK_SECRET") && stderr.contains("base64"),
        "{stderr}"
    );
}

/// `schema.graphql` is the output of `fastpix-sync schema`. Outside CI a stale file is rewritten (and the
/// test still fails, so the change is noticed); on CI (`CI` set) it only fails.
#[test]
fn schema_graphql_is_up_to_date() {
    let output = fastpix_sync().arg("schema").output().unwrap();
    assert!(output.status.success());
    let sdl = String::from_utf8(output.stdout).unwrap();
    assert_eq!(sdl, fastpix_sync::graphql::sdl());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != sdl {
        if std::env::var_os("CI").is_none() {
            std::fs::write(&path, &sdl).unwrap();
        }
        panic!(
            "schema.graphql was stale: run `cargo test` again (outside CI it has been rewritten) and commit it"
        );
    }
}

/// Runs the real binary at the most verbose log level, feeds it the live fixtures and admin queries, and
/// checks that no secret reaches its logs.
#[tokio::test]
async fn secrets_never_reach_the_logs() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_fastpix-sync"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/x.db?mode=rwc", dir.path().display()),
        )
        .env("FASTPIX_SYNC_ADMIN_TOKEN", "log-test-admin-token")
        .env("FASTPIX_WEBHOOK_SECRET", crate::helpers::SECRET)
        .env("RUST_LOG", "trace")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut log = String::new();
    let address = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).await.unwrap() > 0,
            "the server stopped:\n{log}"
        );
        log.push_str(&line);
        if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
            && entry["fields"]["message"] == "listening"
        {
            break entry["fields"]["address"].as_str().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();
    for name in crate::helpers::LIVE_SEQUENCE {
        let body = crate::helpers::fixture(name);
        let signature = fastpix_sync::webhook::verify::sign(crate::helpers::SECRET, &body);
        let response = client
            .post(format!("http://{address}/webhooks/fastpix"))
            .header("FastPix-Signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let query = "{ liveStreams(includeDeleted: true) { nodes { streamKey srtSecret simulcastTargets { url } } } webhookEvents { nodes { payload } } }";
    for token in ["log-test-admin-token", "wrong"] {
        client
            .post(format!("http://{address}/graphql"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .unwrap();
    }
    server.start_kill().unwrap();
    stderr.read_to_string(&mut log).await.unwrap();
    assert!(log.lines().count() > 20, "trace logging is on:\n{log}");
    let mut secrets = crate::queries::secrets_of_the_live_fixtures();
    secrets.extend([
        crate::helpers::SECRET.to_owned(),
        "log-test-admin-token".to_owned(),
    ]);
    for secret in secrets {
        assert!(
            !log.contains(&secret),
            "the log contains a secret ({secret})"
        );
    }
}
