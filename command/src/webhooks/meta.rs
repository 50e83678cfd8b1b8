//! Normalising Meta (Instagram and Facebook) webhook payloads into v1 events.
//!
//! Instagram sends `{"object": "instagram", "entry": [{"id", "time",
//! "changes": [{"field": "comments", "value": {...}}]}]}`; Facebook pages
//! send `"object": "page"` with `"field": "feed"` changes whose `item` is a
//! reaction, comment or share. Changes Tally does not count are reported as
//! ignored. Event ids derive from Meta's own ids, so Meta's redeliveries are
//! deduplicated like any retry.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What one change became.
#[derive(Debug, PartialEq)]
pub enum Normalised {
    /// A v1 event, still to be validated like any other.
    Event(Value),
    /// A change Tally does not count (a mention, an edit, a story insight…).
    Ignored(String),
}

/// Normalises a whole payload; `Err` when it is not a Meta webhook payload.
pub fn normalise(platform: &str, payload: &Value) -> Result<Vec<Normalised>, String> {
    let object = payload
        .get("object")
        .and_then(Value::as_str)
        .ok_or("not a Meta webhook payload: no \"object\"")?;
    let entries = payload
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("not a Meta webhook payload: no \"entry\" array")?;
    let mut out = Vec::new();
    for entry in entries {
        let owner = text(entry, "id");
        let entry_time = entry.get("time").and_then(Value::as_i64);
        let changes = entry.get("changes").and_then(Value::as_array);
        for change in changes.into_iter().flatten() {
            let field = change.get("field").and_then(Value::as_str).unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            out.push(match (object, field) {
                ("instagram", "comments" | "live_comments") => {
                    instagram_comment(platform, owner.as_deref(), entry_time, value)
                }
                ("page", "feed") => facebook_feed(platform, owner.as_deref(), entry_time, value),
                _ => Normalised::Ignored(format!("{object}/{field} changes are not counted")),
            });
        }
    }
    Ok(out)
}

fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Unix seconds to RFC 3339 (the validator judges the result).
fn timestamp(seconds: Option<i64>) -> Value {
    seconds
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn instagram_comment(
    platform: &str,
    owner: Option<&str>,
    time: Option<i64>,
    value: &Value,
) -> Normalised {
    let Some(comment_id) = text(value, "id") else {
        return Normalised::Ignored("comment without an id".into());
    };
    let media = value.get("media").and_then(|m| text(m, "id"));
    let user = value.get("from").and_then(|f| text(f, "id"));
    Normalised::Event(json!({
        "event_id": format!("meta:comment:{comment_id}"),
        "type": "comment",
        "occurred_at": timestamp(time),
        "platform": platform,
        "influencer_id": owner,
        "post_id": media,
        "user_id": user,
        "payload": {"text": value.get("text").cloned().unwrap_or(Value::Null)},
    }))
}

fn facebook_feed(
    platform: &str,
    page: Option<&str>,
    entry_time: Option<i64>,
    value: &Value,
) -> Normalised {
    let item = value.get("item").and_then(Value::as_str).unwrap_or("");
    let verb = value.get("verb").and_then(Value::as_str).unwrap_or("");
    let post = text(value, "post_id");
    let user = value.get("from").and_then(|f| text(f, "id"));
    let time = value
        .get("created_time")
        .and_then(Value::as_i64)
        .or(entry_time);
    let base = |event_id: String, kind: &str| {
        json!({
            "event_id": event_id,
            "type": kind,
            "occurred_at": timestamp(time),
            "platform": platform,
            "influencer_id": page,
            "post_id": post,
            "user_id": user,
        })
    };
    let who = user.clone().unwrap_or_default();
    let at = time.unwrap_or_default();
    let post_id = post.clone().unwrap_or_default();
    let is_like = item == "like"
        || (item == "reaction"
            && value.get("reaction_type").and_then(Value::as_str) == Some("like"));
    match (is_like, item, verb) {
        (true, _, "add") => {
            Normalised::Event(base(format!("meta:like:{post_id}:{who}:{at}"), "like"))
        }
        (true, _, "remove") => {
            Normalised::Event(base(format!("meta:unlike:{post_id}:{who}:{at}"), "unlike"))
        }
        (false, "comment", "add") => match text(value, "comment_id") {
            Some(comment_id) => {
                let mut event = base(format!("meta:comment:{comment_id}"), "comment");
                event["payload"] =
                    json!({"text": value.get("message").cloned().unwrap_or(Value::Null)});
                Normalised::Event(event)
            }
            None => Normalised::Ignored("comment without a comment_id".into()),
        },
        (false, "share", "add") => {
            let share = text(value, "share_id").unwrap_or_else(|| format!("{post_id}:{who}:{at}"));
            Normalised::Event(base(format!("meta:share:{share}"), "share"))
        }
        _ => Normalised::Ignored(format!("feed {item}/{verb} is not counted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(platform: &str, payload: Value) -> Vec<Normalised> {
        normalise(platform, &payload).unwrap()
    }

    #[test]
    fn instagram_comments() {
        let got = events(
            "instagram",
            json!({"object": "instagram", "entry": [{"id": "17841405309211844", "time": 1795345200,
                "changes": [{"field": "comments", "value": {
                    "from": {"id": "232323", "username": "fan"},
                    "media": {"id": "123123", "media_product_type": "FEED"},
                    "id": "17865799348089039", "text": "This is an example."}}]}]}),
        );
        assert_eq!(
            got,
            vec![Normalised::Event(json!({
                "event_id": "meta:comment:17865799348089039", "type": "comment",
                "occurred_at": "2026-11-22T11:00:00Z", "platform": "instagram",
                "influencer_id": "17841405309211844", "post_id": "123123", "user_id": "232323",
                "payload": {"text": "This is an example."}}))]
        );
    }

    #[test]
    fn facebook_feed_reactions_comments_and_shares() {
        let change = |value: Value| json!({"field": "feed", "value": value});
        let got = events(
            "facebook",
            json!({"object": "page", "entry": [{"id": "page-1", "time": 1795345200, "changes": [
                change(json!({"item": "reaction", "reaction_type": "like", "verb": "add",
                              "post_id": "page-1_99", "from": {"id": "u1"}, "created_time": 1795345100})),
                change(json!({"item": "reaction", "reaction_type": "like", "verb": "remove",
                              "post_id": "page-1_99", "from": {"id": "u1"}, "created_time": 1795345150})),
                change(json!({"item": "reaction", "reaction_type": "love", "verb": "add",
                              "post_id": "page-1_99", "from": {"id": "u2"}})),
                change(json!({"item": "comment", "verb": "add", "comment_id": "99_5",
                              "post_id": "page-1_99", "from": {"id": "u3"}, "message": "nice"})),
                change(json!({"item": "share", "verb": "add", "share_id": "s7",
                              "post_id": "page-1_99", "from": {"id": "u4"}})),
                change(json!({"item": "comment", "verb": "edited", "comment_id": "99_5"})),
            ]}]}),
        );
        let kinds: Vec<String> = got
            .iter()
            .map(|n| match n {
                Normalised::Event(e) => format!(
                    "{} {}",
                    e["type"].as_str().unwrap(),
                    e["event_id"].as_str().unwrap()
                ),
                Normalised::Ignored(_) => "ignored".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "like meta:like:page-1_99:u1:1795345100",
                "unlike meta:unlike:page-1_99:u1:1795345150",
                "ignored",
                "comment meta:comment:99_5",
                "share meta:share:s7",
                "ignored"
            ]
        );
        let Normalised::Event(comment) = &got[3] else {
            unreachable!()
        };
        assert_eq!(comment["payload"]["text"], "nice");
        assert_eq!(
            comment["occurred_at"], "2026-11-22T11:00:00Z",
            "falls back to the entry's time"
        );
    }

    #[test]
    fn not_meta_payloads() {
        assert!(normalise("instagram", &json!({"entry": []})).is_err());
        assert!(normalise("instagram", &json!({"object": "instagram"})).is_err());
        assert!(normalise("instagram", &json!([1, 2])).is_err());
        assert_eq!(
            normalise(
                "instagram",
                &json!({"object": "user", "entry": [{"changes": [{"field": "x"}]}]})
            )
            .unwrap()
            .len(),
            1
        );
    }
}
