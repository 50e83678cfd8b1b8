//! The pages and assets over HTTP (through `Router::oneshot`), and the pure
//! parts: media types, the policy, escaping.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use tally_shared::config::Config;
use tower::ServiceExt;

use super::*;
use crate::router;

fn app(adjust: impl FnOnce(&mut Config)) -> Router {
    let mut config = Config::development();
    config.clickhouse.url = "http://127.0.0.1:1".into();
    adjust(&mut config);
    router(AppState::new(&config).unwrap(), &config.query)
}

async fn get(app: Router, uri: &str, etag: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(uri);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn pages_and_assets_are_served_with_their_types_and_policy() {
    let app = app(|_| {});
    for (uri, media_type, contains) in [
        ("/", "text/html; charset=utf-8", "dashboard.js"),
        ("/like", "text/html; charset=utf-8", "like.js"),
        (
            "/assets/dashboard.js",
            "text/javascript; charset=utf-8",
            "import",
        ),
        ("/assets/api.js", "text/javascript; charset=utf-8", "export"),
        (
            "/assets/chart.js",
            "text/javascript; charset=utf-8",
            "export",
        ),
        (
            "/assets/like.js",
            "text/javascript; charset=utf-8",
            "import",
        ),
        ("/assets/app.css", "text/css; charset=utf-8", "{"),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, headers, body) = get(app.clone(), uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(header(&headers, "content-type"), media_type, "{uri}");
        assert!(body.contains(contains), "{uri}: {body:.200}");
        let csp = header(&headers, "content-security-policy");
        assert!(
            csp.contains("script-src 'self'")
                && csp.contains("connect-src 'self' http://127.0.0.1:8470"),
            "{uri}: {csp}"
        );
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
    }
}

#[tokio::test]
async fn the_pages_carry_the_configured_settings() {
    let app = app(|config| {
        config.query.command_api_url = "https://ingest.example.com/".into();
        config.windows.grace_seconds = 90;
    });
    let (_, headers, body) = get(app.clone(), "/like", None).await;
    assert!(
        body.contains(r#"content="https://ingest.example.com""#),
        "{body}"
    );
    assert!(header(&headers, "content-security-policy")
        .contains("connect-src 'self' https://ingest.example.com;"));
    let (_, _, body) = get(app, "/", None).await;
    assert!(body.contains(r#"name="tally-grace-seconds" content="90""#));
    assert!(!body.contains("{{"), "every placeholder is filled");
}

#[tokio::test]
async fn assets_revalidate_with_their_etag_and_unknown_ones_are_404() {
    let app = app(|_| {});
    let (_, headers, _) = get(app.clone(), "/assets/app.css", None).await;
    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() == 26, "{etag}");
    let (status, _, body) = get(app.clone(), "/assets/app.css", Some(&etag)).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    for uri in ["/assets/nope.js", "/assets/..%2FCargo.toml", "/assets/"] {
        let (status, headers, _) = get(app.clone(), uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            header(&headers, "content-type"),
            "application/problem+json",
            "{uri}"
        );
    }
}

#[test]
fn media_types() {
    fn check(name: &str, expected: &str) {
        assert_eq!(content_type(name), expected, "{name}");
    }
    check("a.html", "text/html; charset=utf-8");
    check("dashboard.js", "text/javascript; charset=utf-8");
    check("app.css", "text/css; charset=utf-8");
    check("favicon.svg", "image/svg+xml");
    check("x.json", "application/json");
    check("README", "application/octet-stream");
    check("weird.exe", "application/octet-stream");
}

#[test]
fn the_policy_allows_this_origin_and_the_command_api_only() {
    assert_eq!(
        content_security_policy(Some("http://127.0.0.1:8470")),
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' http://127.0.0.1:8470; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let own = content_security_policy(None);
    assert!(own.contains("connect-src 'self';"), "{own}");
    assert!(!own.contains("unsafe"), "{own}");
    // The pages draw no images from `data:` URLs (charts are inline SVG).
    assert!(!own.contains("data:"), "{own}");
}

#[test]
fn html_escaping() {
    assert_eq!(
        escape_html(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(
        escape_html("http://127.0.0.1:8470"),
        "http://127.0.0.1:8470"
    );
}
