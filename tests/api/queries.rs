//! Acceptance 1–3 of the GraphQL issue: every query field, filter and pagination edge; batching; admin fields.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::ws_client::*;

/// Delivers every fixture in `createdAt` order except the URL media's deletion.
async fn deliver_everything_but_the_deletion(app: &TestApp) {
    for name in MEDIA_SEQUENCE.iter().chain(LIVE_SEQUENCE.iter()) {
        if *name != "video.media.deleted" {
            app.deliver_fixture(name).await;
        }
    }
}

fn ids(nodes: &Value) -> Vec<&str> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn media_queries_answer_from_webhook_data() {
    let app = spawn_app().await;
    deliver_everything_but_the_deletion(&app).await;

    let data = app
        .query(
            r#"query($p: String!) { mediaByPlaybackId(playbackId: $p) {
                id status title durationSeconds aspectRatio maxResolution sourceResolution isAudioOnly
                playbackIds { id accessPolicy } tracks { id type width height frameRate languageCode }
                metadata thumbnailUrl liveStream { id } createdAt updatedAt deletedAt lastEventType lastEventAt } }"#,
            json!({ "p": "a1b2c3d4-e5f6-4789-9abc-def012345678" }),
        )
        .await;
    let media = &data["mediaByPlaybackId"];
    assert_eq!(media["id"], MEDIA_ID);
    assert_eq!(media["status"], "READY");
    assert_eq!(media["durationSeconds"], 183.0);
    assert_eq!(
        media["playbackIds"],
        json!([{ "id": "a1b2c3d4-e5f6-4789-9abc-def012345678", "accessPolicy": "public" }])
    );
    assert_eq!(media["tracks"][0]["type"], "video");
    assert_eq!(media["tracks"][0]["frameRate"], "30.000");
    assert_eq!(media["metadata"]["courseId"], "algebra-101");
    assert_eq!(media["liveStream"], Value::Null);
    assert_eq!(media["lastEventType"], "video.media.updated");
    assert!(
        media["lastEventAt"]
            .as_str()
            .unwrap()
            .starts_with("2026-06-22T14:02:10.006718220")
    );
    assert_eq!(media["deletedAt"], Value::Null);

    let recording = app
        .query(
            "query($id: ID!) { media(id: $id) { status liveStream { id status } } }",
            json!({ "id": RECORDING_ID }),
        )
        .await;
    assert_eq!(recording["media"]["liveStream"]["id"], STREAM_ID);

    let missing = app
        .graphql(r#"{ media(id: "nope") { id } }"#, json!({}), false)
        .await;
    assert_eq!(missing["data"]["media"], Value::Null);
    assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let missing = app
        .graphql(
            r#"{ mediaByPlaybackId(playbackId: "nope") { id } }"#,
            json!({}),
            false,
        )
        .await;
    assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND");

    let failed = app
        .query(
            "{ mediaList(status: [FAILED]) { nodes { id status } } }",
            json!({}),
        )
        .await;
    assert_eq!(ids(&failed["mediaList"]["nodes"]), [FAILED_ID]);
    let all = app.query("{ mediaList { nodes { id } } }", json!({})).await;
    assert_eq!(all["mediaList"]["nodes"].as_array().unwrap().len(), 4);

    app.deliver_fixture("video.media.deleted").await;
    let all = app.query("{ mediaList { nodes { id } } }", json!({})).await;
    assert!(
        !ids(&all["mediaList"]["nodes"]).contains(&MEDIA_ID),
        "deleted media are hidden"
    );
    let all = app
        .query(
            "{ mediaList(includeDeleted: true) { nodes { id status deletedAt } } }",
            json!({}),
        )
        .await;
    assert!(ids(&all["mediaList"]["nodes"]).contains(&MEDIA_ID));
    let tomb = app
        .query(
            "query($id: ID!) { media(id: $id) { status deletedAt } }",
            json!({ "id": MEDIA_ID }),
        )
        .await;
    assert_eq!(tomb["media"]["status"], "DELETED");
    assert!(tomb["media"]["deletedAt"].is_string());
}

#[tokio::test]
async fn live_stream_and_simulcast_queries_answer_from_webhook_data() {
    let app = spawn_app().await;
    for name in &LIVE_SEQUENCE[..10] {
        app.deliver_fixture(name).await;
    }
    let fields = "id status encoderConnected recording playbackIds { id } maxResolution reconnectWindowSeconds
        maxDurationSeconds enableRecording lowLatency mediaPolicy metadata trial createdAt deletedAt lastEventType lastEventAt
        simulcastTargets { id liveStreamId status isEnabled metadata lastEventType } recordings { id status }";
    let by_id = app
        .query(
            &format!("query($id: ID!) {{ liveStream(id: $id) {{ {fields} }} }}"),
            json!({ "id": STREAM_ID }),
        )
        .await;
    let stream = &by_id["liveStream"];
    assert_eq!(
        (
            stream["status"].as_str(),
            stream["encoderConnected"].as_bool(),
            stream["recording"].as_bool()
        ),
        (Some("ACTIVE"), Some(true), Some(true))
    );
    assert_eq!(stream["maxDurationSeconds"], 0);
    assert_eq!(stream["reconnectWindowSeconds"], 60);
    assert_eq!(stream["simulcastTargets"][0]["id"], TARGET_ID);
    assert_eq!(stream["simulcastTargets"][0]["status"], "IDLE");
    assert_eq!(stream["simulcastTargets"][0]["isEnabled"], false);
    assert_eq!(stream["recordings"][0]["id"], RECORDING_ID);

    let by_playback = app
        .query(&format!("{{ liveStreamByPlaybackId(playbackId: \"d4e5f6a7-b8c9-4012-8def-0123456789ab\") {{ {fields} }} }}"), json!({}))
        .await;
    assert_eq!(by_playback["liveStreamByPlaybackId"], by_id["liveStream"]);

    let target = app
        .query("query($id: ID!) { simulcastTarget(id: $id) { id liveStreamId liveStream { id } status isEnabled } }", json!({ "id": TARGET_ID }))
        .await;
    assert_eq!(target["simulcastTarget"]["liveStream"]["id"], STREAM_ID);

    let active = app
        .query(
            "{ liveStreams(status: [ACTIVE]) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(ids(&active["liveStreams"]["nodes"]), [STREAM_ID]);
    let idle = app
        .query(
            "{ liveStreams(status: [IDLE, DISABLED]) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert!(ids(&idle["liveStreams"]["nodes"]).is_empty());

    for name in &LIVE_SEQUENCE[10..] {
        app.deliver_fixture(name).await;
    }
    let visible = app
        .query("{ liveStreams { nodes { id } } }", json!({}))
        .await;
    assert!(
        ids(&visible["liveStreams"]["nodes"]).is_empty(),
        "deleted streams are hidden"
    );
    let deleted = app
        .query(
            "{ liveStreams(includeDeleted: true, status: [DELETED]) { nodes { id deletedAt } } }",
            json!({}),
        )
        .await;
    assert_eq!(ids(&deleted["liveStreams"]["nodes"]), [STREAM_ID]);
}

/// A media webhook with its own ids and `createdAt` (minute `n` of an hour).
fn media_created(n: usize) -> Vec<u8> {
    let text = String::from_utf8(fixture("video.media.created")).unwrap();
    text.replace(MEDIA_ID, &format!("00000000-0000-4000-8000-{n:012}"))
        .replace(
            "a1b2c3d4-e5f6-4789-9abc-def012345678",
            &format!("00000000-0000-4000-9000-{n:012}"),
        )
        .replace(
            "0a1b2c3d-1111-4a00-8000-000000000001",
            &format!("00000000-0000-4000-a000-{n:012}"),
        )
        .replace(
            "2026-06-22T12:38:29.375182Z",
            &format!("2026-06-22T12:{n:02}:00Z"),
        )
        .into_bytes()
}

#[tokio::test]
async fn pagination_is_newest_first_and_stable_under_inserts() {
    let app = spawn_app().await;
    for n in 1..=5 {
        app.deliver(&media_created(n)).await;
    }
    let page = |after: Option<&str>, first: i64| {
        let after = after.map(str::to_owned);
        let app = &app;
        async move {
            app.query(
                "query($a: String, $f: Int) { mediaList(first: $f, after: $a) { edges { cursor node { id } } nodes { id } pageInfo { hasNextPage endCursor } } }",
                json!({ "a": after, "f": first }),
            )
            .await["mediaList"]
                .clone()
        }
    };
    let id = |n: usize| format!("00000000-0000-4000-8000-{n:012}");

    let first = page(None, 2).await;
    assert_eq!(ids(&first["nodes"]), [id(5), id(4)]);
    assert_eq!(first["edges"][1]["cursor"], first["pageInfo"]["endCursor"]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);

    // A newer media arrives between pages: the next page neither repeats nor skips.
    app.deliver(&media_created(30)).await;
    let second = page(first["pageInfo"]["endCursor"].as_str(), 2).await;
    assert_eq!(ids(&second["nodes"]), [id(3), id(2)]);
    let last = page(second["pageInfo"]["endCursor"].as_str(), 2).await;
    assert_eq!(ids(&last["nodes"]), [id(1)]);
    assert_eq!(last["pageInfo"]["hasNextPage"], false);
    let beyond = page(last["pageInfo"]["endCursor"].as_str(), 2).await;
    assert!(ids(&beyond["nodes"]).is_empty());
    assert_eq!(beyond["pageInfo"]["hasNextPage"], false);
    assert_eq!(beyond["pageInfo"]["endCursor"], Value::Null);

    let newest = page(None, 1).await;
    assert_eq!(ids(&newest["nodes"]), [id(30)]);
    let empty = page(None, 0).await;
    assert!(ids(&empty["nodes"]).is_empty());
    let capped = page(None, 1000).await;
    assert_eq!(capped["nodes"].as_array().unwrap().len(), 6);

    let stream_cursor = app
        .query("{ liveStreams { pageInfo { endCursor } } }", json!({}))
        .await;
    assert_eq!(
        stream_cursor["liveStreams"]["pageInfo"]["endCursor"],
        Value::Null
    );
    let foreign = app
        .graphql(
            "query($a: String) { liveStreams(after: $a) { nodes { id } } }",
            json!({ "a": first["pageInfo"]["endCursor"] }),
            false,
        )
        .await;
    assert_eq!(
        foreign["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{foreign}"
    );
    let garbage = app
        .graphql(
            r#"{ mediaList(after: "!!") { nodes { id } } }"#,
            json!({}),
            false,
        )
        .await;
    assert_eq!(garbage["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let negative = app
        .graphql(
            "{ mediaList(first: -1) { nodes { id } } }",
            json!({}),
            false,
        )
        .await;
    assert_eq!(
        negative["errors"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
}

/// SPEC §2: `GET /graphql?query=…` answers a query, its `variables` and `operationName` in the query
/// string too; a `HEAD` is answered as that `GET` is, without the body; without `query`, or with
/// `variables` that are not a JSON object, a JSON 400.
#[tokio::test]
async fn get_requests_answer_queries_from_the_query_string() {
    let app = spawn_app().await;
    app.deliver_fixture("video.media.created").await;
    let url = |params: &[(&str, &str)]| {
        reqwest::Url::parse_with_params(&format!("{}/graphql", app.address), params).unwrap()
    };
    let variables = json!({ "p": MEDIA_PLAYBACK_ID }).to_string();
    let by_playback = url(&[
        (
            "query",
            "query Other { __typename } query ById($p: String!) { mediaByPlaybackId(playbackId: $p) { id } }",
        ),
        ("variables", &variables),
        ("operationName", "ById"),
    ]);
    let response = app.client.get(by_playback.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({ "data": { "mediaByPlaybackId": { "id": MEDIA_ID } } })
    );

    let head = app.client.head(by_playback).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-type"],
        "application/graphql-response+json"
    );

    let variables = |v: &str| url(&[("query", "{ __typename }"), ("variables", v)]);
    for request in [url(&[]), variables("{not json"), variables("[1]")] {
        let refused = app.client.get(request).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "BAD_REQUEST", "{error}");
    }
}

/// The list arguments are nullable with defaults (SPEC: `first: Int = 20`, `includeDeleted: Boolean =
/// false`): `null`, in the document or through a variable, asks for the default. `DELETED` in `status`
/// asks for deleted rows.
#[tokio::test]
async fn list_arguments_null_asks_for_defaults_and_deleted_status_for_deleted_rows() {
    let app = spawn_app().await;
    for n in 1..=25 {
        app.deliver(&media_created(n)).await;
    }
    let id = |n: usize| format!("00000000-0000-4000-8000-{n:012}");
    let deletion = String::from_utf8(fixture("video.media.deleted"))
        .unwrap()
        .replace(MEDIA_ID, &id(25));
    assert_eq!(
        app.deliver(deletion.as_bytes()).await,
        (200, "applied".to_owned())
    );

    let everything = app
        .query(
            "{ mediaList(first: 100, includeDeleted: true) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        everything["mediaList"]["nodes"].as_array().unwrap().len(),
        25
    );
    // Naming `DELETED` in `status` asks for deleted media, without `includeDeleted`.
    let deleted = app
        .query(
            "{ mediaList(status: [DELETED]) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(ids(&deleted["mediaList"]["nodes"]), [id(25)]);
    let newest_twenty: Vec<String> = (5..=24).rev().map(id).collect();
    let lists = |f: &str, d: &str| {
        format!(
            "mediaList(first: {f}, includeDeleted: {d}) {{ nodes {{ id }} }} \
             liveStreams(first: {f}, includeDeleted: {d}) {{ nodes {{ id }} }} \
             webhookEvents(first: {f}) {{ nodes {{ id }} }}"
        )
    };
    for (query, variables) in [
        (format!("{{ {} }}", lists("null", "null")), json!({})),
        (
            format!("query($f: Int, $d: Boolean) {{ {} }}", lists("$f", "$d")),
            json!({ "f": null, "d": null }),
        ),
    ] {
        let answer = app.graphql(&query, variables, true).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        assert_eq!(ids(&answer["data"]["mediaList"]["nodes"]), newest_twenty);
        assert!(ids(&answer["data"]["liveStreams"]["nodes"]).is_empty());
        assert_eq!(
            answer["data"]["webhookEvents"]["nodes"]
                .as_array()
                .unwrap()
                .len(),
            20
        );
    }
}

#[tokio::test]
async fn webhook_events_are_listed_for_admins_with_filters_and_cursors() {
    let app = spawn_app().await;
    for name in MEDIA_SEQUENCE {
        app.deliver_fixture(name).await;
    }
    let query = "query($a: String, $t: [String!], $o: String) { webhookEvents(first: 3, after: $a, types: $t, objectId: $o) {
        nodes { cursor id type objectType objectId occurredAt receivedAt outcome reason payload } pageInfo { hasNextPage endCursor } } }";
    let first = app.query(query, json!({})).await["webhookEvents"].clone();
    assert_eq!(
        first["nodes"][0]["type"], "video.media.deleted",
        "newest first"
    );
    assert_eq!(first["nodes"][0]["payload"]["id"], first["nodes"][0]["id"]);
    assert_eq!(first["nodes"][0]["outcome"], "APPLIED");
    let mut seen: Vec<String> = ids(&first["nodes"]).iter().map(|s| s.to_string()).collect();
    let mut after = first["pageInfo"]["endCursor"].clone();
    while !after.is_null() {
        let page = app.query(query, json!({ "a": after })).await["webhookEvents"].clone();
        seen.extend(ids(&page["nodes"]).iter().map(|s| s.to_string()));
        after = if page["pageInfo"]["hasNextPage"] == true {
            page["pageInfo"]["endCursor"].clone()
        } else {
            Value::Null
        };
    }
    assert_eq!(seen.len(), 7);
    let by_type = app
        .query(
            query,
            json!({ "t": ["video.media.ready", "video.media.failed"] }),
        )
        .await;
    assert_eq!(
        by_type["webhookEvents"]["nodes"].as_array().unwrap().len(),
        2
    );
    let by_object = app.query(query, json!({ "o": UPLOAD_ID })).await;
    let types: Vec<&str> = by_object["webhookEvents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["video.upload.media_created", "video.media.upload"]);
}

#[tokio::test]
async fn admin_fields_need_the_admin_token() {
    let app = spawn_app().await;
    for name in LIVE_SEQUENCE.iter().take(6) {
        app.deliver_fixture(name).await;
    }
    let query = "{ liveStreams { nodes { id streamKey srtSecret simulcastTargets { id url } } } }";
    let public = app.graphql(query, json!({}), false).await;
    let stream = &public["data"]["liveStreams"]["nodes"][0];
    assert_eq!(stream["id"], STREAM_ID, "non-admin fields still answer");
    assert_eq!(
        (&stream["streamKey"], &stream["srtSecret"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(stream["simulcastTargets"][0]["url"], Value::Null);
    let errors = public["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "FORBIDDEN"),
        "{public}"
    );
    let events = app
        .graphql(
            "{ webhookEvents { nodes { id payload } } }",
            json!({}),
            false,
        )
        .await;
    assert_eq!(events["data"], Value::Null);
    assert_eq!(events["errors"][0]["extensions"]["code"], "FORBIDDEN");

    let text = format!("{public}{events}");
    for secret in secrets_of_the_live_fixtures() {
        assert!(
            !text.contains(&secret),
            "a non-admin response leaked {secret}"
        );
    }

    let admin = app.query(query, json!({})).await;
    let stream = &admin["liveStreams"]["nodes"][0];
    assert!(stream["streamKey"].as_str().unwrap().ends_with(STREAM_ID));
    assert!(stream["srtSecret"].is_string());
    assert_eq!(
        stream["simulcastTargets"][0]["url"],
        "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop-qrst"
    );
    let wrong = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth("not-the-token")
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(wrong["errors"][0]["extensions"]["code"], "FORBIDDEN");
}

/// The stream key, SRT secrets and simulcast key of the live fixtures.
pub fn secrets_of_the_live_fixtures() -> Vec<String> {
    let active: Value = serde_json::from_slice(&fixture("video.live_stream.active")).unwrap();
    let data = &active["data"];
    vec![
        data["streamKey"].as_str().unwrap().to_owned(),
        data["srtSecret"].as_str().unwrap().to_owned(),
        data["srtPlaybackResponse"]["srtPlaybackSecret"]
            .as_str()
            .unwrap()
            .to_owned(),
        data["simulcastResponses"][0]["streamKey"]
            .as_str()
            .unwrap()
            .to_owned(),
    ]
}

#[tokio::test]
async fn abusive_queries_are_refused_with_the_limit_named() {
    let app = spawn_app().await;
    let mut deep = String::from("id");
    for _ in 0..8 {
        deep = format!("simulcastTargets {{ liveStream {{ {deep} }} }}");
    }
    // Twice: the second request's document is the one kept from the first, and is checked all the same.
    for _ in 0..2 {
        let answer = app
            .graphql(
                &format!("{{ liveStreams {{ nodes {{ {deep} }} }} }}"),
                json!({}),
                false,
            )
            .await;
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("nested too deep"), "{answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }

    let page = "liveStreams(first: 100) { nodes { id status encoderConnected recording maxResolution lowLatency trial mediaPolicy createdAt lastEventType } }";
    let aliases: String = (0..25).map(|n| format!("a{n}: {page} ")).collect();
    let query = format!("{{ {aliases} }}");
    assert!(query.len() <= fastpix_sync::graphql::documents::MAX_TEXT);
    for _ in 0..2 {
        let answer = app.graphql(&query, json!({}), false).await;
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("too complex"),
            "{answer}"
        );
    }
}

/// A document is parsed once and kept (`graphql::documents`): sent again, over HTTP or a websocket, it
/// answers for its own variables, operation and role, and a text that does not parse gets its syntax error
/// every time.
#[tokio::test]
async fn a_document_sent_again_answers_for_its_own_variables_operation_and_role() {
    let app = spawn_app().await;
    deliver_everything_but_the_deletion(&app).await;
    let by_playback = "query($p: String!) { mediaByPlaybackId(playbackId: $p) { id } }";
    for (playback, id, code) in [
        (
            "a1b2c3d4-e5f6-4789-9abc-def012345678",
            json!(MEDIA_ID),
            Value::Null,
        ),
        (
            "00000000-0000-4000-8000-000000000000",
            Value::Null,
            json!("NOT_FOUND"),
        ),
        (
            "a1b2c3d4-e5f6-4789-9abc-def012345678",
            json!(MEDIA_ID),
            Value::Null,
        ),
    ] {
        let answer = app
            .graphql(by_playback, json!({ "p": playback }), false)
            .await;
        assert_eq!(answer["data"]["mediaByPlaybackId"]["id"], id, "{answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], code, "{answer}");
    }

    let two = "query Media { media(id: \"7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d\") { id } } \
               query Stream { liveStream(id: \"4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b\") { id } }";
    for (operation, field, id) in [
        ("Stream", "liveStream", STREAM_ID),
        ("Media", "media", MEDIA_ID),
        ("Stream", "liveStream", STREAM_ID),
    ] {
        let answer = app
            .post_graphql(json!({ "query": two, "operationName": operation }), false)
            .await;
        assert_eq!(answer["data"][field]["id"], id, "{answer}");
        assert_eq!(answer["data"].as_object().unwrap().len(), 1, "{answer}");
    }

    // Admin-only fields: the same text refuses without the token and answers with it, in either order.
    let key = "query($id: String!) { liveStream(id: $id) { streamKey } }";
    for admin in [false, true, false] {
        let answer = app.graphql(key, json!({ "id": STREAM_ID }), admin).await;
        let code = &answer["errors"][0]["extensions"]["code"];
        let key = &answer["data"]["liveStream"]["streamKey"];
        if admin {
            assert!(key.is_string(), "{answer}");
        } else {
            assert_eq!((code, key), (&json!("FORBIDDEN"), &Value::Null), "{answer}");
        }
    }

    // `@skip` removes a field from async-graphql's copy of the document, never from the kept one.
    let skip = "query($s: Boolean!) { liveStream(id: \"4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b\") { id status @skip(if: $s) } }";
    for skipped in [true, false, true] {
        let data = app.query(skip, json!({ "s": skipped })).await;
        assert_eq!(data["liveStream"]["id"], STREAM_ID, "{data}");
        assert_eq!(
            data["liveStream"].get("status").is_none(),
            skipped,
            "{data}"
        );
    }

    for _ in 0..2 {
        let answer = app.graphql("{ media(id: ", json!({}), false).await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{answer}"
        );
        assert!(answer.get("data").is_none_or(Value::is_null), "{answer}");
    }

    // Over a websocket: a query runs alone, with the document kept from HTTP; a subscription that does
    // not parse gets its error each time.
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    for id in ["a", "b"] {
        client
            .subscribe(
                id,
                by_playback,
                json!({ "p": "a1b2c3d4-e5f6-4789-9abc-def012345678" }),
            )
            .await;
        let data = client.next_data(id).await;
        assert_eq!(data["mediaByPlaybackId"]["id"], MEDIA_ID, "{data}");
        assert_eq!(client.message().await["type"], "complete");
    }
    for id in ["c", "d"] {
        client
            .subscribe(id, "subscription { liveStream(id: ", json!({}))
            .await;
        let message = client.message().await;
        assert_eq!(
            (&message["type"], &message["id"]),
            (&json!("error"), &json!(id)),
            "{message}"
        );
        assert_eq!(
            message["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{message}"
        );
    }

    // Four documents were parsed and kept; each came from the cache twice more over HTTP, the playback
    // query twice more over the websocket; the broken ones were never kept.
    for (source, count) in [("parsed", 4.0), ("kept", 10.0), ("not_kept", 4.0)] {
        let label = format!("source=\"{source}\"");
        let counted = app
            .metric("fastpix_sync_graphql_documents_total", &[&label])
            .await;
        assert_eq!(counted, count, "{source}");
    }
}

/// 100 streams, each with a playback id, a simulcast target and a recording that has a playback id.
async fn hundred_streams(app: &TestApp) {
    let templates = [
        "video.live_stream.created",
        "video.live_stream.simulcast_target.created",
        "video.media.live_stream.created",
    ];
    for n in 0..100 {
        for template in templates {
            let text = String::from_utf8(fixture(template))
                .unwrap()
                .replace(STREAM_ID, &format!("{n:032x}"))
                .replace(TARGET_ID, &format!("{n:031x}t"))
                .replace(RECORDING_ID, &format!("00000000-0000-4000-8000-{n:012}"))
                .replace(
                    "d4e5f6a7-b8c9-4012-8def-0123456789ab",
                    &format!("00000000-0000-4000-9000-{n:012}"),
                )
                .replace(
                    "e5f6a7b8-c9d0-4123-9ef0-123456789abc",
                    &format!("00000000-0000-4000-a000-{n:012}"),
                )
                .replace("-4b00-9000-0000000000", &format!("-4b00-9000-{n:08}00"))
                .replace("-4a00-8000-0000000000", &format!("-4a00-8000-{n:08}00"));
            assert_eq!(
                app.deliver(text.as_bytes()).await,
                (200, "applied".to_owned()),
                "{template} #{n}"
            );
        }
    }
}

#[tokio::test]
async fn a_page_of_100_streams_with_every_nested_field_costs_a_bounded_number_of_statements() {
    let app = spawn_app().await;
    hundred_streams(&app).await;
    let query = "{ liveStreams(first: 100) { nodes { id status playbackIds { id accessPolicy }
        simulcastTargets { id status liveStream { id playbackIds { id } } }
        recordings { id status playbackIds { id } liveStream { id } } } } }";
    let before = app.metric("fastpix_sync_sql_statements_total", &[]).await;
    let data = app.query(query, json!({})).await;
    let statements = app.metric("fastpix_sync_sql_statements_total", &[]).await - before;
    let nodes = data["liveStreams"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 100);
    assert!(
        nodes
            .iter()
            .all(|n| n["simulcastTargets"].as_array().unwrap().len() == 1
                && n["recordings"][0]["playbackIds"].as_array().unwrap().len() == 1
                && n["playbackIds"].as_array().unwrap().len() == 1)
    );
    println!("a 100-stream page with all nested fields ran {statements} SQL statements");
    assert!(statements > 0.0, "the statement counter works");
    assert!(statements <= 10.0, "{statements} statements for one page");
}

const URL_MEDIA_PLAYBACK: &str = "a1b2c3d4-e5f6-4789-9abc-def012345678";
const MEDIA_SELECTION: &str = "id status lastEventType playbackIds { id }";

/// `mediaByPlaybackId` over HTTP with a client of its own (for tasks running beside the test).
async fn by_playback(client: &reqwest::Client, address: &str) -> Value {
    let query = format!(
        "query($p: String!) {{ mediaByPlaybackId(playbackId: $p) {{ {MEDIA_SELECTION} }} }}"
    );
    client
        .post(format!("{address}/graphql"))
        .json(&json!({ "query": query, "variables": { "p": URL_MEDIA_PLAYBACK } }))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_by_playback_id_never_answers_older_than_the_last_acknowledged_webhook() {
    let app = spawn_app().await;
    // Readers keep asking while the webhooks land, so answers are read and kept around every change.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, address, stop) = (app.client.clone(), app.address.clone(), stop.clone());
            tokio::spawn(async move {
                // Answers that found the media (those a stale cache entry could have served).
                let mut found = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = by_playback(&client, &address).await;
                    if answer["data"]["mediaByPlaybackId"].is_object() {
                        found += 1;
                    }
                }
                found
            })
        })
        .collect();
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        for name in MEDIA_SEQUENCE {
            // Deleted stays deleted: the deletion comes last.
            if name == "video.media.deleted" && round + 1 < ROUNDS {
                continue;
            }
            let mut event: Value = serde_json::from_slice(&fixture(name)).unwrap();
            // Later rounds replay the sequence as newer events (fresh ids, later times): each changes the media.
            if round > 0 {
                event["id"] = json!(format!("round-{round}-{name}"));
                let at = event["createdAt"].as_str().unwrap().replacen(
                    "2026",
                    &format!("{}", 2026 + round),
                    1,
                );
                event["createdAt"] = json!(at);
            }
            let (status, body) = app.deliver(&serde_json::to_vec(&event).unwrap()).await;
            assert_eq!(status, 200, "{body}");
            let answer = by_playback(&app.client, &app.address).await;
            // The first delivery creates the media with this playback id; no later one removes it.
            let media = answer["data"]["mediaByPlaybackId"]
                .as_object()
                .unwrap_or_else(|| panic!("after {name}, round {round}: {answer}"));
            let id = media["id"].as_str().unwrap();
            let stored = app
                .query(
                    &format!("query($id: ID!) {{ media(id: $id) {{ {MEDIA_SELECTION} }} }}"),
                    json!({ "id": id }),
                )
                .await;
            assert_eq!(
                answer["data"]["mediaByPlaybackId"], stored["media"],
                "after {name}, round {round}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }

    // On one instance (SQLite) a repeated question is answered from memory.
    if !app.test_db.is_postgres() {
        by_playback(&app.client, &app.address).await;
        let before = app.metric("fastpix_sync_sql_statements_total", &[]).await;
        for _ in 0..3 {
            by_playback(&app.client, &app.address).await;
        }
        assert_eq!(
            app.metric("fastpix_sync_sql_statements_total", &[]).await,
            before
        );
    }
}
