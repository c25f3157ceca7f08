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
