//! Hostile input against the command API over real HTTP.
//!
//! Every case is one request in a table and must be answered with a 4xx
//! (never a 5xx, never a hang) as `application/problem+json` whose `status`
//! is the HTTP status; a 401 also carries `WWW-Authenticate: Bearer`. Each
//! test then checks that the stream holds nothing, and stores one honest
//! event or like to show that it would have seen a leak.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::{json, Value};
use tally_shared::auth::mint_token;
use tally_tests::{rfc3339_ago, Stack, TokenScope as Scope};

/// What a case must be answered with.
#[derive(Debug, Clone)]
enum Expect {
    /// This status, as problem+json.
    Status(u16),
    /// 422, with an error naming this field.
    Invalid(String),
    /// Any 4xx: the HTTP layer may answer before the application does (a
    /// header too large, a URL the client normalises). A body, if any, is
    /// problem+json.
    ClientError,
}

/// Who the request claims to be.
#[derive(Debug, Clone)]
enum Auth {
    /// The test's valid `events:write` token.
    Valid,
    /// No `Authorization` header.
    Missing,
    /// This `Authorization` header, verbatim.
    Header(HeaderValue),
}

/// One hostile request.
struct Case {
    what: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    auth: Auth,
    body: Vec<u8>,
    expect: Expect,
    /// Sent by [`send_raw`] rather than reqwest.
    raw: bool,
}

impl Case {
    fn new(what: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
        Case {
            what: what.into(),
            method,
            path: path.into(),
            content_type: None,
            auth: Auth::Valid,
            body: Vec::new(),
            expect: Expect::ClientError,
            raw: false,
        }
    }

    /// `POST path` with a JSON body.
    fn post(what: impl Into<String>, path: &str, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
        Case {
            content_type: Some("application/json"),
            body: body.into(),
            expect,
            ..Case::new(what, Method::POST, path)
        }
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Case {
        self.content_type = content_type;
        self
    }

    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }

    fn expect(mut self, expect: Expect) -> Case {
        self.expect = expect;
        self
    }

    /// For bodies over the limit: the server answers 413 once it has read
    /// up to the limit and closes the connection without reading the rest.
    /// reqwest keeps writing, meets the closed socket and reports a broken
    /// pipe instead of the answer; [`send_raw`] reads while it writes, as
    /// curl does.
    fn raw(mut self) -> Case {
        self.raw = true;
        self
    }

    /// What was sent, short enough for a failure message.
    fn sent(&self) -> String {
        let auth = match &self.auth {
            Auth::Valid => "a valid token".to_owned(),
            Auth::Missing => "no Authorization".to_owned(),
            Auth::Header(value) => format!("Authorization of {} bytes", value.len()),
        };
        format!(
            "{} {} (content-type {:?}, {auth}, {} body bytes: {})",
            self.method,
            preview(self.path.as_bytes()),
            self.content_type,
            self.body.len(),
            preview(&self.body)
        )
    }
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    if bytes.len() > 120 {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

/// A client that gives up rather than hang.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// What came back.
struct Answer {
    status: u16,
    content_type: Option<String>,
    authenticate: Option<String>,
    body: Vec<u8>,
}

async fn send(http: &reqwest::Client, stack: &Stack, token: &str, case: &Case) -> Answer {
    if case.raw {
        return send_raw(stack.command.addr, token, case).await;
    }
    let url = format!("{}{}", stack.command.url(), case.path);
    let mut request = http
        .request(case.method.clone(), url)
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    match &case.auth {
        Auth::Valid => request = request.bearer_auth(token),
        Auth::Missing => {}
        Auth::Header(value) => request = request.header(AUTHORIZATION, value.clone()),
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: sent {}; got no answer: {e:?}", case.what, case.sent()));
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let (content_type, authenticate) = (header(CONTENT_TYPE), header(WWW_AUTHENTICATE));
    let body = response.bytes().await.unwrap_or_else(|e| {
        panic!(
            "{}: sent {}; reading the answer: {e}",
            case.what,
            case.sent()
        )
    });
    Answer {
        status,
        content_type,
        authenticate,
        body: body.to_vec(),
    }
}

/// Sends `case` over a plain HTTP/1.1 connection (`Connection: close`),
/// reading the answer while another thread is still writing the request.
async fn send_raw(addr: SocketAddr, token: &str, case: &Case) -> Answer {
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        case.method,
        case.path,
        case.body.len()
    )
    .into_bytes();
    if let Some(content_type) = case.content_type {
        request.extend(format!("Content-Type: {content_type}\r\n").bytes());
    }
    match &case.auth {
        Auth::Valid => request.extend(format!("Authorization: Bearer {token}\r\n").bytes()),
        Auth::Missing => {}
        Auth::Header(value) => {
            request.extend(b"Authorization: ");
            request.extend(value.as_bytes());
            request.extend(b"\r\n");
        }
    }
    request.extend(b"\r\n");
    request.extend(&case.body);
    let (answer, read) = tokio::task::spawn_blocking(move || exchange(addr, request))
        .await
        .unwrap();
    let context = || format!("{}: sent {}", case.what, case.sent());
    if let Err(e) = &read {
        // A reset once the server closed is fine if the answer came first;
        // a timeout is a hang.
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{}: no answer within 20 s",
            context()
        );
    }
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{}: no HTTP answer ({read:?}): {:?}",
                context(),
                preview(&answer)
            )
        });
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{}: no status line in {head:?}", context()));
    let (mut content_type, mut authenticate, mut length) = (None, None, None);
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value),
            "www-authenticate" => authenticate = Some(value),
            "content-length" => length = value.parse::<usize>().ok(),
            _ => {}
        }
    }
    let mut body = answer[end + 4..].to_vec();
    if let Some(length) = length {
        body.truncate(length);
    }
    Answer {
        status,
        content_type,
        authenticate,
        body,
    }
}

/// Writes `request` on one thread while reading the answer on this one;
/// returns what was read and how reading ended.
fn exchange(addr: SocketAddr, request: Vec<u8>) -> (Vec<u8>, std::io::Result<usize>) {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Fails once the server has answered and closed: expected.
    let writing = std::thread::spawn(move || writer.write_all(&request));
    let mut answer = Vec::new();
    let read = (&stream).read_to_end(&mut answer);
    // Unblocks the writer if the server stopped reading without closing.
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writing.join();
    (answer, read)
}

/// Sends `case` and checks the answer; returns the parsed body.
async fn check(http: &reqwest::Client, stack: &Stack, token: &str, case: &Case) -> Value {
    let Answer {
        status,
        content_type,
        authenticate,
        body: bytes,
    } = send(http, stack, token, case).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let saw = format!(
        "{status}, content-type {content_type:?}, body {}",
        preview(&bytes)
    );
    let context = format!("{}: sent {}; saw {saw}", case.what, case.sent());

    let problem_expected = match &case.expect {
        Expect::Status(expected) => {
            assert_eq!(status, *expected, "{context}");
            true
        }
        Expect::Invalid(field) => {
            assert_eq!(status, 422, "{context}");
            let named = body["errors"]
                .as_array()
                .is_some_and(|errors| errors.iter().any(|e| e["field"] == field.as_str()));
            assert!(named, "{context}: no error names {field:?}");
            true
        }
        Expect::ClientError => {
            assert!((400..500).contains(&status), "{context}");
            !bytes.is_empty()
        }
    };
    if problem_expected {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{context}"
        );
        assert!(
            body["type"].is_string() && body["title"].is_string(),
            "{context}"
        );
        assert_eq!(body["status"], status, "{context}");
    }
    if status == 401 {
        assert_eq!(authenticate.as_deref(), Some("Bearer"), "{context}");
    }
    body
}

async fn check_all(stack: &Stack, token: &str, cases: &[Case]) {
    let http = client();
    for case in cases {
        check(&http, stack, token, case).await;
    }
}

// ------------------------------------------------------------------ events

/// A valid event of `kind`.
fn example(kind: &str) -> Value {
    let (envelope, payload) = match kind {
        "like" => (json!({"post_id": "p1", "user_id": "u1"}), json!({})),
        "comment" => (json!({"post_id": "p1"}), json!({"text": "nice"})),
        "view" => (json!({"post_id": "p1"}), json!({"count": 3})),
        "click" => (
            json!({"post_id": "p1"}),
            json!({"url": "https://x.example/"}),
        ),
        "conversion" => (
            json!({"post_id": "p1", "campaign_id": "c1"}),
            json!({"value": 10, "currency": "EUR", "order_id": "o-1"}),
        ),
        "follower_snapshot" => (json!({"influencer_id": "i1"}), json!({"followers": 10})),
        "influencer_registered" => (
            json!({"influencer_id": "i1", "platform": "tiktok"}),
            json!({"handle": "@anna", "name": "Anna"}),
        ),
        "post_published" => (
            json!({"post_id": "p1", "influencer_id": "i1", "campaign_id": "c1"}),
            json!({"content_type": "reel", "published_at": rfc3339_ago(60)}),
        ),
        other => panic!("no example for {other}"),
    };
    let mut event = json!({
        "event_id": format!("h-{kind}"),
        "type": kind,
        "occurred_at": rfc3339_ago(10),
        "payload": payload,
    });
    for (key, value) in envelope.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

/// `example(kind)` with `path` (`event_id`, `payload.text`) set to `value`.
fn with(kind: &str, path: &str, value: Value) -> Value {
    let mut event = example(kind);
    match path.strip_prefix("payload.") {
        Some(name) => event["payload"][name] = value,
        None => event[path] = value,
    }
    event
}

/// `POST /v1/events` with `event`; must be 422 naming `field`.
fn invalid(what: impl Into<String>, event: Value, field: &str) -> Case {
    Case::post(
        what,
        "/v1/events",
        event.to_string(),
        Expect::Invalid(field.into()),
    )
}

/// `POST /v1/events` with raw `body`; must be `status`.
fn single(what: impl Into<String>, body: impl Into<Vec<u8>>, status: u16) -> Case {
    Case::post(what, "/v1/events", body, Expect::Status(status))
}

/// `example(kind)` as JSON text with `from` replaced by `to`, byte for byte.
fn replaced(kind: &str, from: &str, to: &[u8]) -> Vec<u8> {
    let text = example(kind).to_string();
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("{from} is not in {text}"));
    [
        &text.as_bytes()[..at],
        to,
        &text.as_bytes()[at + from.len()..],
    ]
    .concat()
}

/// The like example, as JSON text with `inner` spliced in before its end.
fn like_text_with(inner: &str) -> String {
    let text = example("like").to_string();
    format!("{},{inner}}}", &text[..text.len() - 1])
}

/// `depth` nested arrays or objects around `1`.
fn nested(depth: usize, object: bool) -> String {
    if object {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// Strings that must never become part of a subject.
const SUBJECT_BREAKERS: [&str; 7] = ["*", ">", ".", "a.b", "tally.events.>", "a b", "a\tb"];
const ID_FIELDS: [&str; 5] = [
    "event_id",
    "post_id",
    "user_id",
    "influencer_id",
    "campaign_id",
];

fn single_event_cases() -> Vec<Case> {
    let valid = example("like").to_string();
    let mut cases = vec![
        // Malformed and truncated JSON.
        single("an empty body", "", 400),
        single("only whitespace", "  \r\n\t ", 400),
        single("a truncated object", "{\"event_id\": ", 400),
        single("a trailing comma", "{\"event_id\": \"e\",}", 400),
        single("single quotes", "{'event_id': 'e'}", 400),
        single("a bare word", "nul", 400),
        single("a comment", format!("/* hi */ {valid}"), 400),
        single("two documents", format!("{valid} {valid}"), 400),
        single("trailing garbage", format!("{valid}x"), 400),
        single("a byte-order mark", format!("\u{feff}{valid}"), 400),
        single(
            "NaN",
            replaced("view", "\"count\":3", b"\"count\":NaN"),
            400,
        ),
        single(
            "a number beyond f64",
            replaced("view", "\"count\":3", b"\"count\":1e400"),
            400,
        ),
        single(
            "an unterminated string",
            "{\"event_id\": \"e1, \"type\": \"like\"}",
            400,
        ),
        // Content types.
        single("text/plain", valid.clone(), 415).content_type(Some("text/plain")),
        single("no content type", valid.clone(), 415).content_type(None),
        single("a form", valid.clone(), 415)
            .content_type(Some("application/x-www-form-urlencoded")),
        single("multipart", valid.clone(), 415).content_type(Some("multipart/form-data")),
        single("NDJSON on the single endpoint", valid.clone(), 415)
            .content_type(Some("application/x-ndjson")),
        single("a look-alike type", valid.clone(), 415).content_type(Some("application/jsonx")),
        single("a JSON suffix type", valid.clone(), 415)
            .content_type(Some("application/problem+json")),
        // Over the 1 MiB limit.
        single("1 MiB + 1 of spaces", vec![b' '; (1 << 20) + 1], 413).raw(),
        single(
            "a 5 MB event_id",
            with("like", "event_id", json!("e".repeat(5_000_000))).to_string(),
            413,
        )
        .raw(),
        // Deep nesting.
        single("33 nested arrays", nested(33, false), 400),
        single("33 nested objects", nested(33, true), 400),
        single(
            "33 levels, arrays and objects",
            format!("{}1{}", "[{\"a\":".repeat(17), "}]".repeat(17)),
            400,
        ),
        single("100,000 nested arrays", nested(100_000, false), 400),
        single("100,000 nested objects", nested(100_000, true), 400),
        single("100,000 unclosed arrays", "[".repeat(100_000), 400),
        single(
            "41 levels, 39 of them inside a payload",
            replaced(
                "like",
                "\"payload\":{}",
                format!("\"payload\":{{\"x\":{}}}", nested(39, false)).as_bytes(),
            ),
            400,
        ),
        invalid(
            "32 levels (the limit) is read, then refused as an unknown field",
            with(
                "like",
                "payload.x",
                serde_json::from_str(&nested(30, false)).unwrap(),
            ),
            "payload.x",
        ),
        // Invalid UTF-8.
        single("bytes that are not UTF-8", b"\xff\xfe{}".to_vec(), 400),
        single(
            "a raw 0xFF inside a string",
            replaced("like", "h-like", b"h-\xfflike"),
            400,
        ),
        single(
            "an overlong encoding of '/' inside a string",
            replaced("like", "h-like", b"h-\xc0\xaflike"),
            400,
        ),
        single(
            "an encoded surrogate inside a string",
            replaced("like", "h-like", b"h-\xed\xa0\x80like"),
            400,
        ),
        single(
            "a lone escaped surrogate",
            replaced("like", "h-like", b"h-\\ud800like"),
            400,
        ),
        // Huge strings under the body limit.
        invalid(
            "a comment of 10,001 characters",
            with("comment", "payload.text", json!("é".repeat(10_001))),
            "payload.text",
        ),
        invalid(
            "a 100,000-character unknown key is named in 64 characters and an ellipsis",
            {
                let mut event = example("like");
                event["k".repeat(100_000)] = json!(1);
                event
            },
            &format!("{}…", "k".repeat(64)),
        ),
        invalid(
            "a 100,000-character unknown payload key",
            with(
                "like",
                &format!("payload.{}", "k".repeat(100_000)),
                json!(1),
            ),
            &format!("payload.{}…", "k".repeat(64)),
        ),
        // Numbers out of range.
        invalid(
            "a view count of 0",
            with("view", "payload.count", json!(0)),
            "payload.count",
        ),
        invalid(
            "a view count of -1",
            with("view", "payload.count", json!(-1)),
            "payload.count",
        ),
        invalid(
            "a view count of 1e300",
            with("view", "payload.count", json!(1e300)),
            "payload.count",
        ),
        Case::post(
            "a view count of 2^64",
            "/v1/events",
            replaced("view", "\"count\":3", b"\"count\":18446744073709551616"),
            Expect::Invalid("payload.count".into()),
        ),
        invalid(
            "a view count of 1.5",
            with("view", "payload.count", json!(1.5)),
            "payload.count",
        ),
        invalid(
            "a view count of \"3\"",
            with("view", "payload.count", json!("3")),
            "payload.count",
        ),
        invalid(
            "a view count over a billion",
            with("view", "payload.count", json!(1_000_000_001u64)),
            "payload.count",
        ),
        invalid(
            "a conversion value of -1",
            with("conversion", "payload.value", json!(-1)),
            "payload.value",
        ),
        invalid(
            "a conversion value of 1e13",
            with("conversion", "payload.value", json!(1e13)),
            "payload.value",
        ),
        invalid(
            "a conversion value of \"NaN\"",
            with("conversion", "payload.value", json!("NaN")),
            "payload.value",
        ),
        invalid(
            "a conversion value of \"Infinity\"",
            with("conversion", "payload.value", json!("Infinity")),
            "payload.value",
        ),
        invalid(
            "-5 followers",
            with("follower_snapshot", "payload.followers", json!(-5)),
            "payload.followers",
        ),
        invalid(
            "a schema_version of 2^63",
            with("like", "schema_version", json!(1u64 << 63)),
            "schema_version",
        ),
        // Duplicate keys: which one counts would depend on the parser.
        single(
            "a duplicate event_id, the first one hostile",
            like_text_with("\"event_id\":\"dup-1\"").replace("h-like", "a.b"),
            400,
        ),
        single(
            "a duplicate event_id, both valid",
            like_text_with("\"event_id\":\"dup-2\""),
            400,
        ),
        single("a duplicate type", like_text_with("\"type\":\"view\""), 400),
        single(
            "a duplicate key in the payload",
            replaced("view", "\"count\":3", b"\"count\":3,\"count\":-1"),
            400,
        ),
        // Bodies that are JSON but not an object.
        invalid("a bare string", json!("like"), ""),
        invalid("a bare number", json!(42), ""),
        invalid("null", Value::Null, ""),
        invalid("true", json!(true), ""),
        invalid("an empty array", json!([]), ""),
        invalid("an array holding an event", json!([example("like")]), ""),
        invalid("an empty object", json!({}), "event_id"),
        // The tenant comes from the token, never from the body.
        invalid(
            "a tenant in the body",
            with("like", "tenant", json!("other")),
            "tenant",
        ),
        invalid(
            "a source in the body",
            with("like", "source", json!("import")),
            "source",
        ),
        invalid(
            "a received_at in the body",
            with("like", "received_at", json!(rfc3339_ago(0))),
            "received_at",
        ),
    ];

    // Timestamps.
    let now_plus_an_hour = rfc3339_ago(-3600);
    let timestamps = [
        ("far in the future", json!("9999-12-31T23:59:59Z")),
        ("an hour ahead", json!(now_plus_an_hour)),
        ("the epoch", json!("1970-01-01T00:00:00Z")),
        ("year 1", json!("0001-01-01T00:00:00Z")),
        ("year 0 with an offset", json!("0000-01-01T00:00:00+23:59")),
        (
            "year 9999 with an offset",
            json!("9999-12-31T23:59:59-23:59"),
        ),
        ("month 13, day 45", json!("2026-13-45T99:99:99Z")),
        ("unix seconds", json!(1_763_800_000)),
        ("an empty string", json!("")),
        ("no zone", json!("2026-11-22 11:00:00")),
        ("a date only", json!("2026-11-22")),
    ];
    for (what, value) in timestamps {
        cases.push(invalid(
            format!("occurred_at {what}"),
            with("like", "occurred_at", value.clone()),
            "occurred_at",
        ));
    }
    cases.push(invalid(
        "published_at month 13",
        with(
            "post_published",
            "payload.published_at",
            json!("2026-13-45T99:99:99Z"),
        ),
        "payload.published_at",
    ));

    // Subject wildcards, separators and whitespace in every id field.
    for field in ID_FIELDS {
        for id in SUBJECT_BREAKERS {
            cases.push(invalid(
                format!("{field} {id:?}"),
                with("conversion", field, json!(id)),
                field,
            ));
        }
        cases.push(invalid(
            format!("{field} of 129 characters"),
            with("conversion", field, json!("x".repeat(129))),
            field,
        ));
        cases.push(invalid(
            format!("{field} non-ASCII"),
            with("conversion", field, json!("café")),
            field,
        ));
    }
    cases.push(invalid(
        "order_id \"o.1\"",
        with("conversion", "payload.order_id", json!("o.1")),
        "payload.order_id",
    ));
    cases.push(invalid(
        "a tag with a wildcard",
        with("influencer_registered", "payload.tags", json!(["ok", "a*"])),
        "payload.tags",
    ));

    // Control characters in ids and in text that forbids them.
    for (what, text) in [("NUL", "a\u{0}b"), ("BEL", "a\u{7}b"), ("CRLF", "a\r\nb")] {
        for field in ID_FIELDS {
            cases.push(invalid(
                format!("{what} in {field}"),
                with("conversion", field, json!(text)),
                field,
            ));
        }
        for (kind, path, prefix) in [
            ("influencer_registered", "payload.handle", ""),
            ("influencer_registered", "payload.name", ""),
            ("click", "payload.url", "https://x.example/"),
        ] {
            cases.push(invalid(
                format!("{what} in {path}"),
                with(kind, path, json!(format!("{prefix}{text}"))),
                path,
            ));
        }
    }
    // Comments may hold line breaks, never other control characters.
    for text in ["a\u{0}b", "bell\u{7}", "esc\u{1b}[31m"] {
        cases.push(invalid(
            format!("comment text {text:?}"),
            with("comment", "payload.text", json!(text)),
            "payload.text",
        ));
    }
    cases
}

/// Everything a client can get wrong in one event, answered as a problem,
/// and nothing stored; then one valid event is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_single_events_are_refused_and_never_stored() {
    let stack = Stack::start("hostile_events").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let cases = single_event_cases();
    check_all(&stack, &token, &cases).await;
    assert_eq!(
        stack.stored_events().await,
        0,
        "after {} hostile events",
        cases.len()
    );

    let (status, body) = stack.post_event(&token, &example("comment")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stack.stored_events().await, 1);
}

// ----------------------------------------------------------------- batches

fn batch(what: impl Into<String>, content_type: &'static str, body: impl Into<Vec<u8>>) -> Case {
    Case::post(what, "/v1/events/batch", body, Expect::Status(400)).content_type(Some(content_type))
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

fn likes(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| with("like", "event_id", json!(format!("b-{i}"))))
        .collect()
}

fn ndjson(items: &[Value]) -> String {
    items
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn batch_cases() -> Vec<Case> {
    let valid = Value::Array(likes(2)).to_string();
    let mut huge = example("comment");
    huge["payload"]["text"] = json!("x".repeat(1 << 20));
    vec![
        batch("an empty array", JSON, "[]"),
        batch("an empty array with spaces", JSON, " [ \n ] "),
        batch("an empty JSON body", JSON, ""),
        batch("an empty NDJSON body", NDJSON, ""),
        batch("NDJSON of blank lines only", NDJSON, "\n\n \r\n\t\n  \n"),
        batch("an object, not an array", JSON, example("like").to_string()),
        batch("a bare string", JSON, "\"like\""),
        batch("null", JSON, "null"),
        batch("a truncated array", JSON, &valid[..valid.len() - 2]),
        batch("bytes that are not UTF-8", JSON, b"[\xff\xfe]".to_vec()),
        batch("33 nested arrays", JSON, nested(33, false)),
        batch("100,000 nested arrays", JSON, nested(100_000, false)),
        batch(
            "a duplicate key in one item",
            JSON,
            format!("[{}]", like_text_with("\"event_id\":\"dup\"")),
        ),
        batch("1,001 events", JSON, Value::Array(likes(1001)).to_string())
            .expect(Expect::Status(413)),
        batch("1,001 NDJSON lines", NDJSON, ndjson(&likes(1001))).expect(Expect::Status(413)),
        batch("1,001 lines of garbage", NDJSON, "x\n".repeat(1001)).expect(Expect::Status(413)),
        batch("over 1 MiB", JSON, json!([huge]).to_string())
            .expect(Expect::Status(413))
            .raw(),
        batch("over 1 MiB of NDJSON", NDJSON, huge.to_string())
            .expect(Expect::Status(413))
            .raw(),
        batch(
            "5 MB",
            JSON,
            json!([huge, huge, huge, huge, huge]).to_string(),
        )
        .expect(Expect::Status(413))
        .raw(),
        batch("text/plain", "text/plain", valid.clone()).expect(Expect::Status(415)),
        batch("text/csv", "text/csv", "a,b\n1,2").expect(Expect::Status(415)),
        batch("XML", "application/xml", "<events/>").expect(Expect::Status(415)),
        batch("no content type", JSON, valid.clone())
            .content_type(None)
            .expect(Expect::Status(415)),
    ]
}

/// Items that are each invalid on their own: a batch of them is a 207 in
/// which every one is `invalid`.
fn invalid_items() -> Vec<Value> {
    let mut items = vec![
        json!("like"),
        json!(42),
        Value::Null,
        json!([]),
        json!({}),
        with("like", "event_id", json!("tally.events.>")),
        with("like", "post_id", json!("*")),
        with("like", "user_id", json!("a b")),
        with("like", "occurred_at", json!("9999-12-31T23:59:59Z")),
        with("like", "occurred_at", json!("0001-01-01T00:00:00Z")),
        with("like", "tenant", json!("other")),
        with("view", "payload.count", json!(0)),
        with("conversion", "payload.value", json!(1e13)),
        with("comment", "payload.text", json!("x".repeat(10_001))),
        with("like", "event_id", json!("a\u{0}b")),
        with("follower_snapshot", "payload.followers", json!(-5)),
    ];
    let mut long_key = example("like");
    long_key["k".repeat(10_000)] = json!(1);
    items.push(long_key);
    items
}

/// The batch endpoint: each case refused whole, then batches in which every
/// item is invalid are 207s that store nothing; then a valid batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batches_are_refused_and_never_stored() {
    let stack = Stack::start("hostile_batches").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let cases = batch_cases();
    check_all(&stack, &token, &cases).await;

    let items = invalid_items();
    let json_array = Value::Array(items.clone()).to_string().into_bytes();
    // NDJSON also carries lines that are not JSON at all.
    let mut lines: Vec<Vec<u8>> = items.iter().map(|i| i.to_string().into_bytes()).collect();
    lines.extend([
        b"{\"event_id\": ".to_vec(),
        b"\xff\xfe".to_vec(),
        b"[1,]".to_vec(),
        nested(33, true).into_bytes(),
        nested(100_000, false).into_bytes(),
        like_text_with("\"event_id\":\"dup\"").into_bytes(),
    ]);
    let ndjson_body = lines.join(&b'\n');
    let http = client();
    for (what, content_type, body, count) in [
        ("every item invalid (JSON)", JSON, json_array, items.len()),
        (
            "every line invalid (NDJSON)",
            NDJSON,
            ndjson_body,
            lines.len(),
        ),
    ] {
        let response = http
            .post(format!("{}/v1/events/batch", stack.command.url()))
            .bearer_auth(&token)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 207, "{what}: {body}");
        assert_eq!(
            (&body["invalid"], &body["accepted"], &body["failed"]),
            (&json!(count), &json!(0), &json!(0)),
            "{what}: {body}"
        );
        for (i, result) in body["results"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                (&result["index"], &result["status"]),
                (&json!(i), &json!("invalid")),
                "{what}: item {i}: {result}"
            );
            assert!(
                result["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{what}: item {i} says not why: {result}"
            );
        }
    }
    assert_eq!(
        stack.stored_events().await,
        0,
        "after {} hostile batches",
        cases.len() + 2
    );

    let response = http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(&token)
        .json(&likes(2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(stack.stored_events().await, 2);
}

// ------------------------------------------------------------------- likes

/// Path segments that must never reach a subject, URL-encoded, and the
/// answer each gets.
fn hostile_segments() -> Vec<(String, Expect)> {
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

// ------------------------------------------------------------- credentials

fn header(bytes: &[u8]) -> Auth {
    Auth::Header(HeaderValue::from_bytes(bytes).unwrap())
}

fn bearer(token: &str) -> Auth {
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
