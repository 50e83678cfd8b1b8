//! Hostile credentials.

use super::*;
use super::{batches::*, events::*};

pub(super) fn header(bytes: &[u8]) -> Auth {
    Auth::Header(HeaderValue::from_bytes(bytes).unwrap())
}

pub(super) fn bearer(token: &str) -> Auth {
    header(format!("Bearer {token}").as_bytes())
}

/// Missing, malformed, forged, expired, mis-scoped and oversized
/// credentials on every write endpoint: 401 (with `WWW-Authenticate:
/// Bearer`) or 403; nothing stored; then the same requests with a valid
/// token are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_credentials_are_refused_and_never_stored() {
    // No leeway, so that a token expires within the test.
    let stack =
        Stack::start_with("hostile_credentials", |config| config.auth.leeway_secs = 0).await;
    let valid = stack.token("acme", &[Scope::EventsWrite]);
    let expired = mint_token(
        &stack.config.auth,
        "tests",
        "acme",
        &[Scope::EventsWrite],
        0,
    );
    let minted = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut forger = stack.config.auth.clone();
    forger.hs256_secret = "not-the-secret-not-the-secret-not-the-secret"
        .to_owned()
        .into();
    let forged = mint_token(&forger, "tests", "acme", &[Scope::EventsWrite], 3600);
    let unsigned = format!("{}.", valid.rsplit_once('.').unwrap().0);
    // {"alg":"none","typ":"JWT"}, the valid claims, no signature.
    let alg_none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        valid.split('.').nth(1).unwrap()
    );

    let refusals: Vec<(&str, Auth, u16)> = vec![
        ("no Authorization", Auth::Missing, 401),
        ("an empty Authorization", header(b""), 401),
        ("a bare Bearer", header(b"Bearer"), 401),
        ("Bearer and spaces", header(b"Bearer    "), 401),
        ("Basic credentials", header(b"Basic dXNlcjpwYXNz"), 401),
        ("a token without a scheme", header(valid.as_bytes()), 401),
        ("garbage", bearer("garbage"), 401),
        ("three dots", bearer("a.b.c"), 401),
        ("an unsigned token", bearer(&unsigned), 401),
        ("alg none", bearer(&alg_none), 401),
        ("a forged signature", bearer(&forged), 401),
        ("an expired token", bearer(&expired), 401),
        (
            "a token for the tenant \"tally.events.>\"",
            bearer(&stack.token("tally.events.>", &[Scope::EventsWrite])),
            401,
        ),
        (
            "a token for the tenant \"*\"",
            bearer(&stack.token("*", &[Scope::EventsWrite])),
            401,
        ),
        (
            "non-ASCII bytes",
            header(b"Bearer \xff\xfe\xc3\xa9t\xe9"),
            401,
        ),
        ("a 64 KiB token", bearer(&"a".repeat(64 * 1024)), 401),
        (
            "a reports:read token",
            bearer(&stack.token("acme", &[Scope::ReportsRead])),
            403,
        ),
        (
            "a token with no scope",
            bearer(&stack.token("acme", &[])),
            403,
        ),
    ];

    let event = example("like").to_string();
    let batch = Value::Array(likes(2)).to_string();
    let requests = || {
        [
            Case::post(
                "POST /v1/events",
                "/v1/events",
                event.clone(),
                Expect::ClientError,
            ),
            Case::post(
                "POST /v1/events/batch",
                "/v1/events/batch",
                batch.clone(),
                Expect::ClientError,
            ),
            Case::new("PUT a like", Method::PUT, "/v1/posts/p1/likes/u1"),
            Case::new("DELETE a like", Method::DELETE, "/v1/posts/p1/likes/u1"),
            Case::new("GET a like", Method::GET, "/v1/posts/p1/likes/u1"),
        ]
    };

    // The expired token expires once a whole second has passed.
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= minted
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cases = Vec::new();
    for (what, auth, status) in refusals {
        // The header cases may be answered by the HTTP layer instead.
        let expect = match what {
            "non-ASCII bytes" | "a 64 KiB token" => Expect::ClientError,
            _ => Expect::Status(status),
        };
        for request in requests() {
            let what = format!("{} with {what}", request.what);
            cases.push(Case {
                what,
                ..request.auth(auth.clone()).expect(expect.clone())
            });
        }
    }
    check_all(&stack, &valid, &cases).await;
    assert_eq!(
        stack.stored_events().await,
        0,
        "after {} requests with hostile credentials",
        cases.len()
    );

    let http = client();
    for request in requests() {
        let response = http
            .request(
                request.method.clone(),
                format!("{}{}", stack.command.url(), request.path),
            )
            .bearer_auth(&valid)
            .header(CONTENT_TYPE, JSON)
            .body(request.body.clone())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{} with a valid token: {}",
            request.what,
            response.status()
        );
    }
    // One event, two in the batch, a like and an unlike.
    assert_eq!(stack.stored_events().await, 5);
}
