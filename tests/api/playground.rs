//! Acceptance 5 of the GraphQL issue: the playground works offline, in a real headless browser.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

#[tokio::test]
async fn the_playground_page_and_its_assets_are_served_by_the_binary() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>fastpix-sync playground</title>"));
    assert!(
        html.contains("mediaByPlaybackId"),
        "the default query is the player page's"
    );
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/assets/graphiql/"))
        .collect();
    assert_eq!(assets.len(), 4, "{assets:?}");
    for asset in assets {
        let response = app
            .client
            .get(format!("{}{asset}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.bytes().await.unwrap().len() > 1000, "{asset}");
    }
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(
            !html.contains(external),
            "the page loads nothing from another host"
        );
    }
    let missing = app
        .client
        .get(format!("{}/assets/graphiql/nope.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Node and Chromium come from `.ci/run` (`apt-get install chromium`, `npm ci` in `tests/browser`).
/// Outside CI, a machine without them skips this test with a notice; on CI (`CI` set) it fails instead.
fn browser_tools() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = dir.join("node_modules/playwright-core").is_dir()
        && PathBuf::from("/usr/bin/chromium").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok();
    if ready {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the browser test: install chromium and run `npm ci --prefix tests/browser` (.ci/run does)"
    );
    eprintln!(
        "skipping the browser test: run `npm ci --prefix tests/browser` and install Debian's chromium"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_runs_queries_in_a_real_browser_with_the_internet_blocked() {
    let Some(dir) = browser_tools() else {
        return;
    };
    let app = spawn_app().await;
    for name in ["video.media.created", "video.media.ready"] {
        app.deliver_fixture(name).await;
    }
    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("playground.mjs"))
        .env("BASE_URL", &app.address)
        .env(
            "QUERY_EXPECT",
            r#"["\"READY\"", "Lesson 3 - Linear equations"]"#,
        )
        .env(
            "SUBSCRIPTION",
            "subscription Watch {\n  media(playbackId: \"a1b2c3d4-e5f6-4789-9abc-def012345678\") { status title }\n}",
        )
        .env("SUBSCRIPTION_EXPECT", r#"["Lesson 3 - Linear equations (revised)"]"#)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running node");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("{line}");
            if line.contains("subscription transport") {
                // The page is subscribed: a change now must show up in it.
                app.deliver_fixture("video.media.updated").await;
            }
            output.push(line);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), read)
        .await
        .expect("the browser check finishes within two minutes");
    let status = node.wait().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut node.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        status.success(),
        "browser check failed:\n{}\n{stderr}",
        output.join("\n")
    );
    assert!(output.iter().any(|l| l.starts_with("PASS")), "{output:?}");
}
