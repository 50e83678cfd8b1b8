//! The dashboard and the like-button demo in a real browser: Debian's
//! Chromium, headless, driven by `tests/browser/run.mjs` (playwright-core).
//!
//! The stack runs as usual, plus a query service that serves the pages with
//! the command API's URL, which in turn allows the pages' origin by CORS. A
//! small dataset goes in through the command API; once it is projected the
//! test asks the API for every number the dashboard will show, runs the
//! browser script, and compares what the pages showed (the script's report)
//! with those answers. The script itself checks what only a browser can:
//! no script error or CSP violation, the token out of the address bar, a
//! bad token's 401 shown, and a like in one window reaching a second
//! window's counter within a second (and the unlike; timed from the click
//! to the second window's change, up to three rounds on a busy machine,
//! every round printed). Screenshots: `target/browser-artifacts/`.
//!
//! Node (20 or later), `tests/browser/node_modules` and `/usr/bin/chromium`
//! must exist (`./dev test` installs them); a missing one fails the test,
//! never skips it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tally_tests::{eventually, read, rfc3339_ago, Stack, TokenScope as Scope};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CAMPAIGN: &str = "c-browser";
const INFLUENCER: &str = "inf-1";
const POST: &str = "p-1";
/// Long enough that no bucket turns complete while the test runs.
const GRACE_SECONDS: u32 = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The dataset: a campaign, seven influencers with a post each (three in
/// the campaign), interactions ranked by influencer, audience events, a
/// burst by one user. Old events (15-28 minutes ago) fall in complete
/// buckets, recent ones (the last three minutes) in incomplete ones.
fn dataset() -> Vec<Value> {
    let mut events = vec![json!({
        "event_id": "b-campaign", "type": "campaign_created", "occurred_at": rfc3339_ago(7200),
        "campaign_id": CAMPAIGN,
        "payload": {"name": "Browser launch", "budget": 1000, "currency": "EUR",
                    "starts_at": rfc3339_ago(86_400), "ends_at": rfc3339_ago(-30 * 86_400)}
    })];
    let platform = |k: usize| if k % 2 == 1 { "instagram" } else { "tiktok" };
    for k in 1..=7usize {
        let (influencer, post) = (format!("inf-{k}"), format!("p-{k}"));
        events.push(json!({
            "event_id": format!("b-reg-{k}"), "type": "influencer_registered",
            "occurred_at": rfc3339_ago(7000), "influencer_id": influencer, "platform": platform(k),
            "payload": {"handle": format!("@inf{k}"), "name": format!("Influencer {k}")}
        }));
        let mut published = json!({
            "event_id": format!("b-pub-{k}"), "type": "post_published", "occurred_at": rfc3339_ago(6900),
            "influencer_id": influencer, "post_id": post, "platform": platform(k),
            "payload": {"content_type": "reel"}
        });
        if k <= 3 {
            published["campaign_id"] = json!(CAMPAIGN);
        }
        events.push(published);
        let at = |i: usize| {
            if i % 3 == 0 {
                rfc3339_ago(30 + (i as i64 * 17) % 140)
            } else {
                rfc3339_ago(900 + (i as i64 * 131) % 800)
            }
        };
        let interaction = |id: String, kind: &str, i: usize, payload: Value| {
            let mut event = json!({"event_id": id, "type": kind, "occurred_at": at(i),
                                   "post_id": post, "user_id": format!("u-{k}-{i}")});
            if payload != Value::Null {
                event["payload"] = payload;
            }
            event
        };
        for i in 0..(8 - k) * 2 {
            events.push(interaction(
                format!("b-like-{k}-{i}"),
                "like",
                i,
                Value::Null,
            ));
        }
        for i in 0..2 {
            events.push(interaction(
                format!("b-view-{k}-{i}"),
                "view",
                i,
                json!({"count": 100 * k}),
            ));
        }
        events.push(interaction(
            format!("b-comment-{k}"),
            "comment",
            k,
            json!({"text": "love it"}),
        ));
        for i in 0..k {
            events.push(interaction(
                format!("b-click-{k}-{i}"),
                "click",
                i,
                Value::Null,
            ));
        }
    }
    events.push(json!({
        "event_id": "b-conversion", "type": "conversion", "occurred_at": rfc3339_ago(1000),
        "post_id": POST, "user_id": "u-buyer", "payload": {"value": 120.5, "currency": "EUR"}
    }));
    for (i, (followers, ago)) in [(1000, 3 * 86_400), (1080, 86_400)].into_iter().enumerate() {
        events.push(json!({
            "event_id": format!("b-snap-{i}"), "type": "follower_snapshot", "occurred_at": rfc3339_ago(ago),
            "influencer_id": INFLUENCER, "payload": {"followers": followers}
        }));
    }
    for i in 0..5 {
        let kind = if i == 4 { "unfollow" } else { "follow" };
        events.push(json!({
            "event_id": format!("b-follow-{i}"), "type": kind, "occurred_at": rfc3339_ago(1200),
            "influencer_id": INFLUENCER, "user_id": format!("f-{i}")
        }));
    }
    // One user clicking one post a dozen times in a minute: a burst.
    let burst_at = rfc3339_ago(1300);
    for i in 0..12 {
        events.push(json!({
            "event_id": format!("b-bot-{i}"), "type": "click", "occurred_at": burst_at,
            "post_id": "p-2", "user_id": "bot-1"
        }));
    }
    events
}

async fn get(stack: &Stack, base: &str, token: &str, path: &str) -> Value {
    let response = stack
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A page value (`data-value`, a string) as a number; `""` is null.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))),
        Value::Number(n) => n.as_f64(),
        Value::Null => None,
        other => panic!("not a number: {other}"),
    }
}

/// `shown` (the page's `data-*` values by name) equals `api` for `names`.
fn same(what: &str, shown: &Value, api: &Value, names: &[&str]) {
    for name in names {
        let page = number(&shown[name]);
        let expected = api[name].as_f64();
        let equal = match (page, expected) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            (None, None) => true,
            _ => false,
        };
        assert!(
            equal,
            "{what}: the page shows {name} = {page:?}, the API answers {expected:?}\npage: {shown}\napi: {api}"
        );
    }
}

/// The program a check needs, or a loud failure naming how to get it.
fn require(path: &Path, how: &str) {
    assert!(path.exists(), "{} is missing: {how}", path.display());
}

fn find_node() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("node");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("node is not installed: run ./dev test (it installs nodejs and the browser tests' npm packages)");
}

/// playwright-core (`tests/browser/package-lock.json`) needs Node.js 20.
fn require_node_20(node: &Path) {
    let output = std::process::Command::new(node)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} --version: {e}", node.display()));
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major: Option<u32> = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok());
    assert!(
        major.is_some_and(|m| m >= 20),
        "the browser tests need Node.js 20 or later (playwright-core); {} is {version:?}",
        node.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_apis_numbers_and_likes_reach_another_window_within_a_second() {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    require(
        &chromium,
        "install Debian's chromium and chromium-driver (./dev test does)",
    );
    let node = find_node();
    require_node_20(&node);
    let scripts = root().join("tests/browser");
    require(
        &scripts.join("node_modules/playwright-core"),
        "run `npm ci` in tests/browser (./dev test does)",
    );

    // The pages' service: its origin is known before the command API starts,
    // which allows it by CORS; it is told the command API's URL in turn.
    let pages_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pages = format!("http://{}", pages_listener.local_addr().unwrap());
    let stack = Stack::start_with("browser", |config| {
        config.command.cors_allowed_origins = vec![pages.clone()];
        config.windows.grace_seconds = GRACE_SECONDS;
    })
    .await;
    let mut pages_config = stack.config.clone();
    pages_config.query.command_api_url = stack.command.url();
    let pages_shutdown = CancellationToken::new();
    let pages_task = tokio::spawn(tally_query::serve(
        pages_config,
        pages_listener,
        pages_shutdown.clone(),
    ));
    let _stop_pages = pages_shutdown.clone().drop_guard();

    let token = stack.token("acme", &[Scope::EventsWrite, Scope::ReportsRead]);
    let response = stack
        .http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(&token)
        .json(&dataset())
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 202, "the dataset: {body}");
    let last = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap();
    eventually("the dataset projected", Duration::from_secs(30), || async {
        let body = get(&stack, &pages, &token, "/v1/late-events?limit=1").await;
        let fresh = &body["freshness"];
        match fresh["position"].as_u64() {
            Some(p) if p >= last && fresh["stale"] == false => Ok(()),
            _ => Err(body.to_string()),
        }
    })
    .await;

    // What the API answers for every number the dashboard shows.
    let q = |path: String| {
        let (stack, pages, token) = (&stack, &pages, &token);
        async move { get(stack, pages, token, &path).await }
    };
    let aggregates = q(format!("/v1/campaigns/{CAMPAIGN}/aggregates?period=24h")).await;
    let trend = q(format!(
        "/v1/trends?entity=campaign:{CAMPAIGN}&metric=engagements&step=1m&window=1m&period=24h"
    ))
    .await;
    let engagement = q(format!(
        "/v1/influencers/{INFLUENCER}/engagement?granularity=minute&period=24h"
    ))
    .await;
    let followers = q(format!("/v1/influencers/{INFLUENCER}/followers?period=7d")).await;
    let campaign_ranking = q(format!(
        "/v1/influencers/rankings?metric=engagements&period=24h&limit=5&campaign_id={CAMPAIGN}"
    ))
    .await;
    let ranking = q("/v1/influencers/rankings?metric=likes&period=24h&limit=5".into()).await;
    let cursor = ranking["next_cursor"]
        .as_str()
        .expect("seven influencers: a second page");
    let ranking2 = q(format!(
        "/v1/influencers/rankings?metric=likes&period=24h&limit=5&cursor={cursor}"
    ))
    .await;
    let late = q("/v1/late-events?limit=5".into()).await;
    let anomalies = q(format!(
        "/v1/anomalies?influencer_id={INFLUENCER}&granularity=minute&period=24h"
    ))
    .await;
    let post = q(format!("/v1/posts/{POST}/metrics")).await;
    let refused = stack
        .http
        .get(format!("{pages}/v1/influencers/rankings"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    let (refused_status, refused) = read(refused).await;
    assert_eq!(refused_status, 401, "{refused}");

    // The browser.
    let artifacts = root().join("target/browser-artifacts");
    let report_file = artifacts.join("report.json");
    let _ = std::fs::remove_file(&report_file);
    let mut command = tokio::process::Command::new(&node);
    command
        .arg(scripts.join("run.mjs"))
        .current_dir(&scripts)
        .env("TALLY_PAGES_URL", &pages)
        .env("TALLY_TOKEN", &token)
        .env("TALLY_CAMPAIGN", CAMPAIGN)
        .env("TALLY_INFLUENCER", INFLUENCER)
        .env("TALLY_POST", POST)
        .env("TALLY_ARTIFACTS", &artifacts)
        .env("TALLY_REPORT", &report_file)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser script finishes within 2 minutes")
        .expect("running node tests/browser/run.mjs");
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{log}");
    let report: Value = std::fs::read(&report_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| panic!("the browser script wrote no report:\n{log}"));
    for shot in report["screenshots"].as_array().into_iter().flatten() {
        println!("screenshot: {}", shot.as_str().unwrap());
    }
    assert!(
        output.status.success(),
        "the browser checks failed ({}): {:#}\n{log}",
        output.status,
        report["problems"]
    );

    // The campaign view: totals, breakdowns, chart and ranking.
    let campaign = &report["campaign"];
    assert_eq!(campaign["errors"], "", "{campaign}");
    same(
        "campaign totals",
        &campaign["totals"],
        &aggregates,
        &[
            "likes",
            "shares",
            "comments",
            "views",
            "clicks",
            "conversions",
            "events",
            "ctr",
            "conversion_rate",
            "engagement_rate",
            "conversion_value",
            "budget",
            "roi",
        ],
    );
    assert!(aggregates["likes"].as_i64().unwrap() > 0, "{aggregates}");
    let keys = |lines: &Value| -> Vec<Value> {
        lines
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["key"].clone())
            .collect()
    };
    assert_eq!(
        campaign["breakdown"]["influencer"].as_array().unwrap(),
        &keys(&aggregates["by_influencer"])
    );
    assert_eq!(
        campaign["breakdown"]["platform"].as_array().unwrap(),
        &keys(&aggregates["by_platform"])
    );
    // Trend points carry no completeness: the page decides it as the API
    // does for buckets (end plus grace behind the watermark).
    let watermark = time::OffsetDateTime::parse(
        trend["freshness"]["watermark"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let nonzero = |bars: Vec<Value>| -> Vec<Value> {
        bars.into_iter()
            .filter(|b| b["value"].as_f64() != Some(0.0))
            .collect()
    };
    let expected: Vec<Value> = trend["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let start = p["start"].as_i64().unwrap();
            json!({"start": start, "value": p["value"],
                   "complete": start + 60 + i64::from(GRACE_SECONDS) <= watermark})
        })
        .collect();
    let shown = nonzero(campaign["chart"]["list"].as_array().unwrap().clone());
    let expected = nonzero(expected);
    assert_eq!(shown, expected, "the campaign chart's bars");
    assert!(
        shown.iter().any(|b| b["complete"] == true) && shown.iter().any(|b| b["complete"] == false),
        "the dataset has complete and incomplete buckets: {shown:?}"
    );
    let ranked = |answer: &Value| -> Vec<Value> {
        answer["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| json!({"influencer_id": i["influencer_id"], "value": i["value"]}))
            .collect()
    };
    assert_eq!(
        campaign["ranking"].as_array().unwrap(),
        &ranked(&campaign_ranking)
    );
    assert_eq!(
        number(&campaign["anomalies"]["bursts"]),
        Some(anomalies["bursts"].as_array().unwrap().len() as f64)
    );

    // The influencer view.
    let influencer = &report["influencer"];
    assert_eq!(influencer["errors"], "", "{influencer}");
    let buckets = engagement["buckets"].as_array().unwrap();
    let mut sums = json!({});
    const BUCKET_COUNTS: [&str; 8] = [
        "likes",
        "shares",
        "comments",
        "views",
        "clicks",
        "conversions",
        "events",
        "late",
    ];
    for name in BUCKET_COUNTS {
        sums[name] = json!(buckets
            .iter()
            .map(|b| b[name].as_i64().unwrap())
            .sum::<i64>());
    }
    same(
        "influencer totals (sums of the buckets)",
        &influencer["totals"],
        &sums,
        &BUCKET_COUNTS,
    );
    let bars: Vec<Value> = buckets
        .iter()
        .map(|b| {
            let value = b["likes"].as_i64().unwrap()
                + b["shares"].as_i64().unwrap()
                + b["comments"].as_i64().unwrap();
            json!({"start": b["start"], "value": value, "complete": b["complete"]})
        })
        .collect();
    assert_eq!(
        influencer["chart"]["list"].as_array().unwrap(),
        &bars,
        "the influencer chart's bars"
    );
    let incomplete = bars.iter().filter(|b| b["complete"] == false).count();
    assert!(incomplete > 0, "{bars:?}");
    assert_eq!(influencer["chart"]["incomplete"], incomplete);
    assert_eq!(
        influencer["chart"]["hatched"], incomplete,
        "incomplete bars are hatched"
    );
    same(
        "followers",
        &influencer["followers"],
        &json!({"followers": followers["count"], "growth_rate": followers["growth_rate"]}),
        &["followers", "growth_rate"],
    );
    assert!(followers["count"].as_i64().unwrap() > 0, "{followers}");
    assert_eq!(influencer["ranking"].as_array().unwrap(), &ranked(&ranking));
    assert_eq!(
        report["rankingPage2"]["ranking"].as_array().unwrap(),
        &ranked(&ranking2)
    );
    assert_eq!(report["rankingPage2"]["rankingPage"], 2);
    same(
        "late events",
        &influencer["late"],
        &json!({"late_total": late["total"]}),
        &["late_total"],
    );
    same(
        "anomalies",
        &influencer["anomalies"],
        &json!({"spikes": anomalies["spikes"].as_array().unwrap().len(),
                "bursts": anomalies["bursts"].as_array().unwrap().len()}),
        &["spikes", "bursts"],
    );
    assert!(!anomalies["bursts"].as_array().unwrap().is_empty());
    assert_eq!(
        influencer["position"], aggregates["freshness"]["position"],
        "freshness shown"
    );

    // A bad token: the API's own words on the page.
    let shown = report["badToken"]["errors"].as_str().unwrap();
    assert!(
        shown.contains("401") && shown.contains(refused["detail"].as_str().unwrap()),
        "the page shows {shown:?}; the API answers {refused}"
    );

    // The like button: counts as the API had them, one up, and back.
    let like = &report["like"];
    let before = post["likes"].as_i64().unwrap();
    assert_eq!(like["before"], before, "{like}");
    assert_eq!(like["afterLike"], before + 1, "{like}");
    assert_eq!(like["afterLikeInA"], before + 1, "{like}");
    assert_eq!(like["afterUnlike"], before, "{like}");
    assert_eq!(like["withinLimit"], true, "{like}");
    assert!(like["likeMs"].as_i64().unwrap() <= 1000, "{like}");
    assert!(like["unlikeMs"].as_i64().unwrap() <= 1000, "{like}");
    println!(
        "like reached the second window in {} ms, unlike in {} ms (rounds: {})",
        like["likeMs"], like["unlikeMs"], like["rounds"]
    );

    pages_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), pages_task).await;
}

/// The command API answers the pages' preflights from an allowed origin
/// only, and the query service serves the pages without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_likes_are_allowed_for_the_configured_origin_only() {
    let stack = Stack::start_with("browser_cors", |config| {
        config.command.cors_allowed_origins = vec!["http://127.0.0.1:8471".into()];
    })
    .await;
    let url = format!("{}/v1/posts/p1/likes/u1", stack.command.url());
    for (origin, allowed) in [
        ("http://127.0.0.1:8471", true),
        ("http://127.0.0.1:9999", false),
    ] {
        let response = stack
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        let allow = response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allow.as_deref(), allowed.then_some(origin), "{origin}");
    }
    // A real cross-origin like: answered, with the origin allowed.
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let response = stack
        .http
        .put(&url)
        .header("origin", "http://127.0.0.1:8471")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8471"
    );
    let (status, body) = read(response).await;
    assert_eq!(
        (status, body["liked"].clone()),
        (200, json!(true)),
        "{body}"
    );

    for (path, media_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/like", "text/html; charset=utf-8"),
        ("/assets/dashboard.js", "text/javascript; charset=utf-8"),
    ] {
        let response = stack
            .http
            .get(format!("{}{path}", stack.query.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], media_type, "{path}");
        assert!(response.headers().contains_key("content-security-policy"));
    }
}
