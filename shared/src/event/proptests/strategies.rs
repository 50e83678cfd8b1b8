//! Generators of events, JSON and hostile strings for the property tests.

use super::*;

/// Strings a hostile client might send: anything at all, subject
/// metacharacters and control characters, near-limit lengths.
pub(super) fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_:.*> \t\r\n\u{0}\u{7}\u{7f}\u{85}\u{a0}\u{2028}\u{feff}é-]{0,12}",
        select(vec![
            "",
            " ",
            ".",
            "*",
            ">",
            "a.b",
            "tally.events.>",
            "tally.events.*.like",
            "\u{0}",
            "a\u{0}b",
            "\r\n",
            "NaN",
            "Infinity",
            "-0",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2026-13-45T99:99:99Z",
            "2026-11-22T11:59:00+23:59",
            "2026-11-22T11:59:00-23:59",
            "2026-11-22T23:59:60Z",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59",
            "0000-01-01T00:00:00Z",
            "javascript:alert(1)",
            "https://",
            "EUR",
            "like",
        ])
        .prop_map(str::to_owned),
        (select(vec!['x', 'é', '.', '\u{0}', '🦀']), 60usize..140)
            .prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

pub(super) fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // non-finite becomes null
        select(vec![
            0.0,
            -0.0,
            1.5,
            1e300,
            -1.0,
            1e12,
            1e13,
            18446744073709551616.0
        ])
        .prop_map(Value::from),
    ]
}

pub(super) fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        hostile_string().prop_map(Value::String),
    ]
}

pub(super) fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(ENVELOPE.to_vec()).prop_map(str::to_owned),
        select(PAYLOAD_KEYS.to_vec()).prop_map(str::to_owned),
        hostile_string(),
    ]
}

/// Any JSON value, at most 5 levels deep.
pub(super) fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

pub(super) fn valid_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_:-]{1,16}",
        "[A-Za-z0-9_:-]{120,128}",
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
    ]
}

pub(super) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// A timestamp `age` seconds before [`NOW`], written with an offset.
pub(super) fn timestamp(age: i64, offset_minutes: i16) -> String {
    let offset = UtcOffset::from_whole_seconds(i32::from(offset_minutes) * 60).unwrap();
    rfc3339((NOW - Duration::seconds(age)).to_offset(offset))
}

pub(super) fn kind() -> impl Strategy<Value = EventKind> {
    select(EventKind::ALL.to_vec())
}

/// Payload values valid for their rules, generated once per case; each kind
/// takes the ones it needs.
#[derive(Debug, Clone)]
pub(super) struct PayloadParts {
    text: String,
    count: Option<u64>,
    url: Option<String>,
    money: f64,
    currency: &'static str,
    order_id: Option<String>,
    followers: u64,
    handle: String,
    name: String,
    tags: Option<Vec<String>>,
    content_type: &'static str,
    starts: (i64, i16),
    span_secs: i64,
}

pub(super) fn payload_parts() -> impl Strategy<Value = PayloadParts> {
    (
        (
            "(\\PC|\n|\r|\t){0,40}",
            prop::option::of(1u64..=1_000_000_000),
            prop::option::of("https?://[a-z]{1,12}\\.example/[a-zA-Z0-9/?=&%-]{0,30}"),
            prop_oneof![0.0f64..=1e12, select(vec![0.0, 1e12, 49.95])],
            select(vec!["EUR", "USD", "JPY", "XOF", "CHF"]),
            prop::option::of(valid_id()),
        ),
        (
            0u64..=10_000_000_000,
            "@?[A-Za-z0-9_.]{1,40}",
            "[A-Za-z]\\PC{0,60}",
            prop::option::of(prop::collection::vec("[A-Za-z0-9_:-]{1,64}", 0..=5)),
            select(CONTENT_TYPES.to_vec()),
            (-1_000_000_000i64..1_000_000_000, -1439i16..=1439),
            0i64..100_000_000,
        ),
    )
        .prop_map(
            |(
                (text, count, url, money, currency, order_id),
                (followers, handle, name, tags, content_type, starts, span_secs),
            )| PayloadParts {
                text,
                count,
                url,
                money,
                currency,
                order_id,
                followers,
                handle,
                name,
                tags,
                content_type,
                starts,
                span_secs,
            },
        )
}

pub(super) fn payload_for(
    kind: EventKind,
    p: &PayloadParts,
    optional: [bool; 4],
) -> Map<String, Value> {
    let mut payload = Map::new();
    let mut put = |key: &str, value: Value| {
        payload.insert(key.to_owned(), value);
    };
    let tags = || Value::from(p.tags.clone().unwrap_or_default());
    let starts = timestamp(p.starts.0, p.starts.1);
    let ends = timestamp(p.starts.0 - p.span_secs, 0);
    match kind {
        EventKind::Liked
        | EventKind::Unliked
        | EventKind::Shared
        | EventKind::Followed
        | EventKind::Unfollowed => {}
        EventKind::Commented => put("text", p.text.clone().into()),
        EventKind::Viewed => {
            if let Some(count) = p.count {
                put("count", count.into());
            }
        }
        EventKind::Clicked => {
            if let Some(url) = &p.url {
                put("url", url.clone().into());
            }
        }
        EventKind::Converted => {
            put("value", p.money.into());
            put("currency", p.currency.into());
            if let Some(order) = &p.order_id {
                put("order_id", order.clone().into());
            }
        }
        EventKind::FollowersCounted => put("followers", p.followers.into()),
        EventKind::InfluencerRegistered | EventKind::InfluencerUpdated => {
            if kind == EventKind::InfluencerRegistered || optional[0] {
                put("handle", p.handle.clone().into());
            }
            if optional[1] {
                put("name", p.name.clone().into());
            }
            if p.tags.is_some() {
                put("tags", tags());
            }
        }
        EventKind::PostPublished => {
            put("content_type", p.content_type.into());
            if optional[0] {
                put("published_at", starts.into());
            }
            if p.tags.is_some() {
                put("tags", tags());
            }
        }
        EventKind::CampaignCreated | EventKind::CampaignUpdated => {
            let all = kind == EventKind::CampaignCreated;
            if all || optional[0] {
                put("name", p.name.clone().into());
            }
            if all || optional[1] {
                put("budget", p.money.into());
                put("currency", p.currency.into());
            }
            if all || optional[2] {
                put("starts_at", starts.into());
            }
            if all || optional[3] {
                put("ends_at", ends.into());
            }
            if p.tags.is_some() {
                put("tags", tags());
            }
        }
    }
    payload
}

/// A valid event of any kind, as a client would send it.
pub(super) fn valid_event() -> impl Strategy<Value = Value> {
    (
        kind(),
        prop::collection::vec(valid_id(), 5),
        prop::array::uniform5(any::<bool>()),
        prop::option::of(select(Platform::ALL.to_vec())),
        // From 5 minutes ahead (the allowed skew) to 10 years back.
        (-300i64..=3650 * 86_400, -1439i16..=1439),
        prop::option::of(1u8..=2),
        payload_parts(),
        prop::array::uniform4(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |(kind, ids, with_id, platform, (age, offset), version, parts, optional, explicit)| {
                let mut event = Map::new();
                event.insert("event_id".into(), ids[0].clone().into());
                event.insert("type".into(), kind.as_str().into());
                event.insert("occurred_at".into(), timestamp(age, offset).into());
                let required: &[&str] = match kind {
                    EventKind::InfluencerRegistered => &["influencer_id", "platform"],
                    EventKind::InfluencerUpdated => &["influencer_id"],
                    EventKind::PostPublished => &["post_id", "influencer_id"],
                    EventKind::CampaignCreated | EventKind::CampaignUpdated => &["campaign_id"],
                    EventKind::Followed | EventKind::Unfollowed | EventKind::FollowersCounted => {
                        &["influencer_id"]
                    }
                    _ => &["post_id"],
                };
                for (i, field) in ID_FIELDS.iter().enumerate().skip(1) {
                    if with_id[i] || required.contains(field) {
                        event.insert((*field).into(), ids[i].clone().into());
                    }
                }
                if let Some(platform) = platform {
                    event.insert("platform".into(), platform.as_str().into());
                } else if required.contains(&"platform") {
                    event.insert("platform".into(), "other".into());
                }
                if let Some(version) = version {
                    event.insert("schema_version".into(), version.into());
                }
                let payload = payload_for(kind, &parts, optional);
                if explicit || !payload.is_empty() {
                    event.insert("payload".into(), Value::Object(payload));
                }
                Value::Object(event)
            },
        )
}

/// Objects made of the envelope's keys (and some others) with values that are
/// often of the right shape and often not.
pub(super) fn envelope_like() -> impl Strategy<Value = Value> {
    let plausible = prop_oneof![
        valid_id().prop_map(Value::from),
        kind().prop_map(|k| Value::from(k.as_str())),
        select(Platform::ALL.to_vec()).prop_map(|p| Value::from(p.as_str())),
        (-400i64..=4000 * 86_400, -1439i16..=1439).prop_map(|(a, o)| Value::from(timestamp(a, o))),
        prop::collection::btree_map(
            prop_oneof![
                select(PAYLOAD_KEYS.to_vec()).prop_map(str::to_owned),
                hostile_string()
            ],
            json_leaf(),
            0..6,
        )
        .prop_map(|map| Value::Object(map.into_iter().collect())),
        json_value(),
    ];
    prop::collection::btree_map(json_key(), plausible, 0..12)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// A valid event with one of its fields (envelope or payload) replaced by
/// `replacement`.
pub(super) fn replace_one_field(event: Value, pick: Index, replacement: Value) -> (Value, String) {
    let mut event = event;
    let mut paths: Vec<String> = event
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "payload")
        .cloned()
        .collect();
    if let Some(payload) = event.get("payload").and_then(Value::as_object) {
        paths.extend(payload.keys().map(|k| format!("payload.{k}")));
    }
    let path = pick.get(&paths).clone();
    match path.strip_prefix("payload.") {
        Some(key) => event["payload"][key] = replacement,
        None => event[path.as_str()] = replacement,
    }
    (event, path)
}
