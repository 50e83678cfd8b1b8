//! The web pages the query service serves beside its API: the dashboard
//! (`/`) and the like-button demo (`/like`), with their scripts and styles
//! under `/assets/`. They are plain files from `query/assets/`, embedded at
//! build time; the pages read every number through the public API with the
//! token the user gives them, like any other client, so they need no
//! authentication of their own and are not part of the OpenAPI document.
//!
//! The server fills in two settings when it starts: the command API's URL
//! (the like page calls it) and the grace period (the dashboard marks
//! trend buckets complete with it). Every answer carries a strict
//! Content-Security-Policy: scripts and styles from this origin only, no
//! inline code, connections to this origin and the command API's.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tally_shared::config::{origin_of, Config};
use tally_shared::http::ApiError;

use crate::AppState;

#[cfg(test)]
mod tests;

/// A file of `query/assets/`, embedded.
struct Asset {
    name: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!("../../assets/", $name)),
        }
    };
}

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    asset!("api.js"),
    asset!("dashboard.js"),
    asset!("chart.js"),
    asset!("like.js"),
    asset!("app.css"),
    asset!("favicon.svg"),
];

const DASHBOARD: &str = include_str!("../../assets/dashboard.html");
const LIKE: &str = include_str!("../../assets/like.html");

/// The pages as served: rendered once from the configuration.
pub struct Pages {
    dashboard: Bytes,
    like: Bytes,
    csp: HeaderValue,
}

impl Pages {
    pub fn new(config: &Config) -> Pages {
        let command_api = config.query.command_api_url.trim_end_matches('/');
        let render = |template: &str| {
            Bytes::from(
                template
                    .replace("{{command_api_url}}", &escape_html(command_api))
                    .replace(
                        "{{grace_seconds}}",
                        &config.windows.grace_seconds.to_string(),
                    ),
            )
        };
        // Checked at start-up (`Config::check`); an unusable URL only
        // leaves the like page without its API.
        let csp = content_security_policy(origin_of(command_api));
        Pages {
            dashboard: render(DASHBOARD),
            like: render(LIKE),
            csp: HeaderValue::from_str(&csp).expect("the policy is visible ASCII"),
        }
    }
}

/// The page and asset routes (plain routes, outside the OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/like", get(like))
        .route("/assets/{name}", get(asset))
}

async fn dashboard(State(state): State<AppState>) -> Response {
    let pages = &state.inner.pages;
    page(pages, pages.dashboard.clone())
}

async fn like(State(state): State<AppState>) -> Response {
    let pages = &state.inner.pages;
    page(pages, pages.like.clone())
}

fn page(pages: &Pages, body: Bytes) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type("page.html")),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    protect(response.headers_mut(), &pages.csp);
    response
}

async fn asset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Err(ApiError::NotFound("no such resource".into()));
    };
    let etag = etag(asset.body);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(asset.name))],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a header value"),
    );
    protect(headers, &state.inner.pages.csp);
    Ok(response)
}

/// Headers every page and asset carries.
fn protect(headers: &mut HeaderMap, csp: &HeaderValue) {
    headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The media type of an asset, from its name.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The pages' policy: nothing but this origin's scripts, styles and images,
/// and connections to this origin and the command API's (`None`: this
/// origin only).
fn content_security_policy(command_api_origin: Option<&str>) -> String {
    let connect = match command_api_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// A strong entity tag of an asset's bytes.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// `value` safe inside an HTML attribute or text.
fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
