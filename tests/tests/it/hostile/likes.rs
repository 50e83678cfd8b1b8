//! Hostile like requests.

use super::*;

/// Path segments that must never reach a subject, URL-encoded, and the
/// answer each gets.
pub(super) fn hostile_segments() -> Vec<(String, Expect)> {
    let bad = Expect::Status(400);
    let mut segments: Vec<(String, Expect)> = [
        "%2A",
        "%3E",
        "a.b",
        "a%2Eb",
        "tally.events.%3E",
        "tally.events.%2A.like",
        "a%20b",
        "a%09b",
        "a%0D%0Ab",
        "a%00b",
        "a%07b",
        "a%2Fb",
        "caf%C3%A9",
        // Not UTF-8 once decoded.
        "%FF",
        "a%C0%AFb",
        "%ED%A0%80",
    ]
    .into_iter()
    .map(|s| (s.to_owned(), bad.clone()))
    .collect();
    segments.push(("x".repeat(129), bad.clone()));
    segments.push(("x".repeat(10_000), bad.clone()));
    // A lone "." or ".." is a dot segment: the client's URL parser removes
    // it, so the request reaches another path.
    for dots in [".", "..", "%2E", "%2e%2E"] {
        segments.push((dots.to_owned(), Expect::ClientError));
    }
    segments
}

/// PUT, DELETE and GET on like paths with hostile post and user ids: all
/// refused as problems; nothing stored; then one like is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_like_paths_are_refused_and_never_stored() {
    let stack = Stack::start("hostile_likes").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let mut cases = Vec::new();
    for (segment, expect) in hostile_segments() {
        for method in [Method::PUT, Method::DELETE, Method::GET] {
            for (what, path) in [
                ("post", format!("/v1/posts/{segment}/likes/u1")),
                ("user", format!("/v1/posts/p1/likes/{segment}")),
            ] {
                cases.push(
                    Case::new(
                        format!("{method} a {what} id {segment:?}"),
                        method.clone(),
                        path,
                    )
                    .expect(expect.clone()),
                );
            }
        }
    }
    // A body and a content type are ignored, not trusted.
    cases.push(Case::post(
        "a like with a hostile body",
        "/v1/posts/p1/likes/u1",
        "{\"user_id\": \"*\"}",
        Expect::Status(405),
    ));
    check_all(&stack, &token, &cases).await;
    assert_eq!(
        stack.stored_events().await,
        0,
        "after {} hostile like requests",
        cases.len()
    );

    let response = client()
        .put(format!("{}/v1/posts/p1/likes/u1", stack.command.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(stack.stored_events().await, 1);
}
