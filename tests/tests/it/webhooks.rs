use std::time::Duration;

use serde_json::{json, Value};
use tally_command::webhooks::signature::sign;
use tally_shared::config::WebhookSecrets;
use tally_tests::{read, rfc3339_ago, Stack, TokenScope as Scope};

const META_SECRET: &str = "meta-app-secret-for-tests";
const GENERIC_SECRET: &str = "generic-secret-for-tests";

async fn webhook_stack(name: &str) -> Stack {
    Stack::start_with(name, |config| {
        config.webhooks.tenants.insert(
            "acme".into(),
            WebhookSecrets {
                meta_app_secret: Some(META_SECRET.to_owned().into()),
                meta_verify_token: Some("verify-me".to_owned().into()),
                generic_secret: Some(GENERIC_SECRET.to_owned().into()),
            },
        );
    })
    .await
}

async fn deliver(
    stack: &Stack,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let mut request = stack
        .http
        .post(format!("{}{path}", stack.command.url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    read(request.send().await.unwrap()).await
}

fn instagram_comment(comment_id: &str) -> String {
    json!({"object": "instagram", "entry": [{"id": "inf-77", "time": time::OffsetDateTime::now_utc().unix_timestamp() - 30,
        "changes": [
            {"field": "comments", "value": {"from": {"id": "fan-1"}, "media": {"id": "ig-post-1"},
                                            "id": comment_id, "text": "so good"}},
            {"field": "mentions", "value": {"media_id": "x", "comment_id": "y"}}
        ]}]})
    .to_string()
}

/// Meta: a signed delivery is stored, a redelivery is a duplicate, a bad or
/// missing signature is 401, and the callback verification echoes the
/// challenge only for the right token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_webhooks_are_verified_normalised_and_deduplicated() {
    let stack = webhook_stack("webhooks_meta").await;
    let body = instagram_comment("c-1");
    let signed = vec![(
        "x-hub-signature-256",
        sign(META_SECRET.as_bytes(), &[body.as_bytes()]),
    )];

    let (status, first) =
        deliver(&stack, "/v1/webhooks/instagram?tenant=acme", &signed, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (&first["accepted"], &first["ignored"]),
        (&json!(1), &json!(1)),
        "{first}"
    );
    assert_eq!(first["results"][0]["event_id"], "meta:comment:c-1");

    let (status, again) =
        deliver(&stack, "/v1/webhooks/instagram?tenant=acme", &signed, &body).await;
    assert_eq!((status, &again["duplicates"]), (200, &json!(1)), "{again}");

    let forged = vec![("x-hub-signature-256", sign(b"wrong", &[body.as_bytes()]))];
    for (headers, path) in [
        (forged.clone(), "/v1/webhooks/instagram?tenant=acme"),
        (vec![], "/v1/webhooks/instagram?tenant=acme"),
        (signed.clone(), "/v1/webhooks/instagram?tenant=globex"),
    ] {
        let (status, problem) = deliver(&stack, path, &headers, &body).await;
        assert_eq!(status, 401, "{path}: {problem}");
    }
    // The body is part of what is signed.
    let response = stack
        .http
        .post(format!(
            "{}/v1/webhooks/instagram?tenant=acme",
            stack.command.url()
        ))
        .header("x-hub-signature-256", sign(b"wrong", &[body.as_bytes()]))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let tampered = body.replace("so good", "so bad");
    let (status, _) = deliver(
        &stack,
        "/v1/webhooks/instagram?tenant=acme",
        &signed,
        &tampered,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = deliver(&stack, "/v1/webhooks/myspace?tenant=acme", &signed, &body).await;
    assert_eq!(status, 404);

    let verify = |token: &str| {
        format!(
            "{}/v1/webhooks/instagram?tenant=acme&hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            stack.command.url()
        )
    };
    let response = stack.http.get(verify("verify-me")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1158201444");
    assert_eq!(
        stack
            .http
            .get(verify("nope"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // The comment counts on the post like any other.
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    tally_tests::eventually(
        "the webhook comment to be counted",
        Duration::from_secs(30),
        || async {
            match stack.post_metrics(&reader, "ig-post-1").await {
                (200, m) if m["comments"] == 1 => Ok(()),
                (status, m) => Err(format!("{status} {m}")),
            }
        },
    )
    .await;
}

/// Generic signed JSON: signature over "<timestamp>.<body>", replays outside
/// the tolerance refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_webhooks_check_signature_and_timestamp() {
    let stack = webhook_stack("webhooks_generic").await;
    let body = json!([
        {"event_id": "g-1", "type": "click", "occurred_at": rfc3339_ago(5), "post_id": "p"},
        {"event_id": "g-2", "type": "view", "occurred_at": rfc3339_ago(5), "post_id": "p", "payload": {"count": 10}}
    ])
    .to_string();
    let signed_at = |at: i64| {
        let ts = at.to_string();
        vec![
            (
                "x-tally-signature",
                sign(
                    GENERIC_SECRET.as_bytes(),
                    &[ts.as_bytes(), b".", body.as_bytes()],
                ),
            ),
            ("x-tally-timestamp", ts),
        ]
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (status, result) = deliver(
        &stack,
        "/v1/webhooks/generic?tenant=acme",
        &signed_at(now),
        &body,
    )
    .await;
    assert_eq!((status, &result["accepted"]), (200, &json!(2)), "{result}");

    let (status, stale) = deliver(
        &stack,
        "/v1/webhooks/generic?tenant=acme",
        &signed_at(now - 3600),
        &body,
    )
    .await;
    assert_eq!(status, 401, "{stale}");
    let mut mismatched = signed_at(now);
    mismatched[1].1 = (now - 1).to_string();
    let (status, _) = deliver(
        &stack,
        "/v1/webhooks/generic?tenant=acme",
        &mismatched,
        &body,
    )
    .await;
    assert_eq!(status, 401, "the timestamp is signed too");
    let (status, _) = deliver(&stack, "/v1/webhooks/generic", &signed_at(now), &body).await;
    assert_eq!(status, 400, "the tenant is required");

    assert_eq!(stack.stored_events().await, 2);
}
