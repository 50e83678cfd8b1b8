//! Hostile input against the command API over real HTTP.
//!
//! Every case is one request in a table and must be answered with a 4xx
//! (never a 5xx, never a hang) as `application/problem+json` whose `status`
//! is the HTTP status; a 401 also carries `WWW-Authenticate: Bearer`. Each
//! test then checks that the stream holds nothing, and stores one honest
//! event or like to show that it would have seen a leak.
//!
//! This module is the table's machinery; the cases are by endpoint in
//! `events`, `batches`, `likes` and `credentials`.

mod batches;
mod credentials;
mod events;
mod likes;

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
