//! Property tests: the validator, the stored form and the body reader
//! against generated (and often hostile) input.
//!
//! The unit tests next to each function pin individual cases; these check
//! what must hold for every input: no panics, ids that are safe as subject
//! tokens, errors that name real fields without echoing hostile keys, and
//! round trips that change nothing.

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};

use super::{
    is_valid_id, validate, EventKind, FieldError, Limits, Platform, Source, StoredEvent,
    CONTENT_TYPES, MAX_ID_LEN,
};
use crate::http::{parse_json, ApiError, MAX_JSON_DEPTH};

const NOW: OffsetDateTime = datetime!(2026-11-22 12:00:00 UTC);

use super::validate::ENVELOPE_FIELDS as ENVELOPE;

const ID_FIELDS: [&str; 5] = [
    "event_id",
    "influencer_id",
    "post_id",
    "campaign_id",
    "user_id",
];

/// Every payload key some event kind knows.
const PAYLOAD_KEYS: [&str; 16] = [
    "text",
    "count",
    "url",
    "value",
    "currency",
    "order_id",
    "followers",
    "handle",
    "name",
    "tags",
    "content_type",
    "published_at",
    "budget",
    "starts_at",
    "ends_at",
    "extra",
];

/// Longest field name an error may show for a hostile key: 64 characters
/// and an ellipsis.
const MAX_SHOWN_KEY_CHARS: usize = 65;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

fn check(input: &Value) -> Result<super::Event, Vec<FieldError>> {
    validate(input, NOW, &Limits::default())
}

mod strategies;
use strategies::*;

// ---------------------------------------------------------------- invariants

/// What every answer of the validator must look like, whatever the input:
/// an error list is non-empty and each error names a field the input could
/// mean (an envelope field, `payload.<name>`, the whole event as "", or one
/// of the input's unknown keys, shortened) without control characters and
/// without echoing more than [`MAX_SHOWN_KEY_CHARS`] of a hostile key.
fn assert_well_formed(input: &Value, result: &Result<super::Event, Vec<FieldError>>) {
    let errors = match result {
        Ok(event) => {
            for id in [
                &Some(event.event_id.clone()),
                &event.post_id,
                &event.user_id,
            ]
            .into_iter()
            .chain([&event.influencer_id, &event.campaign_id])
            .flatten()
            {
                assert!(is_valid_id(id), "accepted id {id:?} from {input}");
            }
            let limits = Limits::default();
            assert!(
                event.occurred_at <= NOW + limits.max_future_skew
                    && event.occurred_at >= NOW - limits.max_age,
                "accepted occurred_at {} from {input}",
                event.occurred_at
            );
            return;
        }
        Err(errors) => errors,
    };
    assert!(!errors.is_empty(), "an empty error list for {input}");
    for error in errors {
        let field = error.field.as_str();
        let known = field.is_empty() || ENVELOPE.contains(&field);
        let shown = field.strip_prefix("payload.").unwrap_or(field);
        assert!(
            known || shown.chars().count() <= MAX_SHOWN_KEY_CHARS,
            "error field {field:?} echoes too much of a key; input {input}"
        );
        assert!(
            !field.chars().any(char::is_control),
            "error field {field:?} has control characters; input {input}"
        );
        if !known && !field.starts_with("payload.") {
            // An unknown top-level key: it must come from the input.
            let keys = input.as_object().expect("only objects have unknown keys");
            assert!(
                keys.keys().any(|k| shown_key(k) == field),
                "error field {field:?} names no key of {input}"
            );
        }
        assert!(!error.message.is_empty(), "no message for {field:?}");
    }
}

/// How an unknown key is shown: control characters dropped, at most 64
/// characters, an ellipsis when shortened.
fn shown_key(key: &str) -> String {
    let mut shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    shown
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `layers` nested containers (`true`: an object, `false`: an array) around `leaf`.
fn nested(layers: &[bool], leaf: &str) -> String {
    let mut text = String::new();
    for &object in layers {
        text.push_str(if object { "{\"k\": " } else { "[" });
    }
    text.push_str(leaf);
    for &object in layers.iter().rev() {
        text.push(if object { '}' } else { ']' });
    }
    text
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn validate_never_panics_on_any_json(input in json_value()) {
        let result = check(&input);
        assert_well_formed(&input, &result);
    }

    #[test]
    fn validate_never_panics_on_objects_with_the_envelope_keys(input in envelope_like()) {
        let result = check(&input);
        assert_well_formed(&input, &result);
    }

    #[test]
    fn any_string_in_any_field_is_answered(
        event in valid_event(),
        pick in any::<Index>(),
        text in hostile_string(),
    ) {
        let (input, path) = replace_one_field(event, pick, Value::String(text.clone()));
        let result = check(&input);
        assert_well_formed(&input, &result);
        if ID_FIELDS.contains(&path.as_str()) && !is_valid_id(&text) {
            let errors = result.as_ref().expect_err("an invalid id was accepted");
            prop_assert!(
                errors.iter().any(|e| e.field == path),
                "{path} = {text:?} is not named in {errors:?}"
            );
        }
    }

    #[test]
    fn any_value_in_any_field_is_answered(
        event in valid_event(),
        pick in any::<Index>(),
        value in json_value(),
    ) {
        let (input, _) = replace_one_field(event, pick, value);
        let result = check(&input);
        assert_well_formed(&input, &result);
    }

    #[test]
    fn accepted_ids_are_safe_subject_tokens(
        id in prop_oneof![hostile_string(), valid_id(), "[A-Za-z0-9_:.*> -]{0,130}"],
    ) {
        if is_valid_id(&id) {
            prop_assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "{id:?}");
            prop_assert!(
                !id.chars().any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace()),
                "{id:?} holds a subject metacharacter"
            );
        }
    }

    #[test]
    fn ids_with_subject_metacharacters_are_refused_in_every_id_field(
        event in valid_event(),
        field in select(ID_FIELDS.to_vec()),
        prefix in "[A-Za-z0-9_:-]{0,8}",
        meta in select(vec![
            ".", "*", ">", " ", "\t", "\n", "\r", "\u{b}", "\u{c}", "\u{85}", "\u{a0}",
            "\u{2003}", "\u{2028}", "\u{3000}", "..", ".>", "*.*",
        ]),
        suffix in "[A-Za-z0-9_:-]{0,8}",
    ) {
        let id = format!("{prefix}{meta}{suffix}");
        prop_assert!(!is_valid_id(&id), "{id:?}");
        let mut input = event;
        input[field] = Value::String(id.clone());
        let result = check(&input);
        assert_well_formed(&input, &result);
        let errors = result.expect_err("an id with a metacharacter was accepted");
        prop_assert!(
            errors.iter().any(|e| e.field == field),
            "{field} = {id:?} is not named in {errors:?}"
        );
    }

    #[test]
    fn generated_valid_events_are_valid_and_survive_a_json_round_trip(input in valid_event()) {
        let event = check(&input).unwrap_or_else(|e| panic!("{input} is refused: {e:?}"));
        let bytes = serde_json::to_vec(&event).unwrap();
        let json = parse_json(&bytes).unwrap_or_else(|e| panic!("{event:?} does not read back: {e}"));
        let again = check(&json).unwrap_or_else(|e| panic!("{json} (from {input}) is refused: {e:?}"));
        prop_assert_eq!(again, event);
    }

    #[test]
    fn stored_events_decode_to_themselves(
        input in valid_event(),
        tenant in "[A-Za-z0-9_-]{1,64}",
        source in select(vec![Source::Api, Source::Batch, Source::LikeButton, Source::Webhook, Source::Import]),
        received_age in -300i64..=3650 * 86_400,
    ) {
        let event = check(&input).unwrap_or_else(|e| panic!("{input} is refused: {e:?}"));
        let stored = StoredEvent::new(&tenant, source, event, NOW - Duration::seconds(received_age));
        let bytes = stored.encode();
        let decoded = StoredEvent::decode(&bytes)
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", String::from_utf8_lossy(&bytes)));
        prop_assert_eq!(decoded, stored);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = StoredEvent::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_damaged_records(
        input in valid_event(),
        version in prop_oneof![
            json_number(),
            select(vec![Value::Null, Value::from("2"), Value::from(-1), Value::from(1), Value::from(2)]),
        ],
        omit in any::<Index>(),
        cut in any::<Index>(),
        noise in json_value(),
    ) {
        let event = check(&input).unwrap_or_else(|e| panic!("{input} is refused: {e:?}"));
        let stored = StoredEvent::new("acme", Source::Api, event, NOW);
        let mut record: Value = serde_json::from_slice(&stored.encode()).unwrap();
        let object = record.as_object_mut().unwrap();
        object.insert("schema_version".into(), version);
        let keys: Vec<String> = object.keys().cloned().collect();
        let dropped = omit.get(&keys).clone();
        let mut without = object.clone();
        without.remove(&dropped);
        let _ = StoredEvent::decode(Value::Object(without).to_string().as_bytes());
        object.insert("payload".into(), noise);
        let bytes = record.to_string().into_bytes();
        let _ = StoredEvent::decode(&bytes);
        let _ = StoredEvent::decode(&bytes[..cut.index(bytes.len() + 1)]);
    }

    #[test]
    fn hostile_keys_are_never_echoed_whole(
        event in valid_event(),
        key in prop_oneof![
            hostile_string(),
            (any::<String>(), 1usize..200).prop_map(|(s, n)| s.repeat(n)),
            (select(vec!["k", "é", "\u{7}", "🦀", "\u{0}"]), 60usize..2000)
                .prop_map(|(s, n)| s.repeat(n)),
        ],
        in_payload in any::<bool>(),
    ) {
        let mut input = event;
        if in_payload {
            if input.get("payload").is_none() {
                input["payload"] = Value::Object(Map::new());
            }
            input["payload"][key.as_str()] = Value::from(1);
        } else {
            input[key.as_str()] = Value::from(1);
        }
        let result = check(&input);
        assert_well_formed(&input, &result);
        if key.chars().count() > MAX_SHOWN_KEY_CHARS {
            let errors = result.expect_err("an unknown long key was accepted");
            for error in &errors {
                prop_assert!(!error.field.contains(key.as_str()), "{error:?}");
                prop_assert!(!error.message.contains(key.as_str()), "{error:?}");
            }
        }
    }

    #[test]
    fn parse_json_never_panics_on_arbitrary_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            prop::collection::vec(
                select(b"{}[]\",:\\ \n0123456789eE.-+truefalsnl\xff\xc3\xa9u".to_vec()),
                0..512,
            ),
        ],
    ) {
        if let Ok(value) = parse_json(&bytes) {
            prop_assert!(depth(&value) <= MAX_JSON_DEPTH, "{value}");
        }
    }

    #[test]
    fn parse_json_reads_any_value_it_can_hold(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        let parsed = parse_json(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        prop_assert_eq!(parsed, value);
    }

    #[test]
    fn parse_json_refuses_objects_that_repeat_a_key(
        key in hostile_string(),
        first in json_value(),
        second in json_value(),
        wrapped in any::<bool>(),
    ) {
        let key = Value::from(key).to_string();
        let object = format!("{{{key}:{first},\"other\":1,{key}:{second}}}");
        let text = if wrapped { format!("[{{\"a\":{object}}}]") } else { object };
        match parse_json(text.as_bytes()) {
            Err(ApiError::Malformed(message)) => {
                prop_assert!(message.contains("repeats a key"), "{message}")
            }
            other => prop_assert!(false, "{text}: {other:?}"),
        }
    }

    #[test]
    fn parse_json_refuses_nesting_deeper_than_the_limit(
        layers in prop::collection::vec(any::<bool>(), 1..80),
        leaf in select(vec!["1", "null", "\"[[[{{{\"", "\"\\\"]]\"", "[]", "{}"]),
    ) {
        let text = nested(&layers, leaf);
        let deepest = layers.len() + usize::from(leaf == "[]" || leaf == "{}");
        match parse_json(text.as_bytes()) {
            Ok(value) => {
                prop_assert!(deepest <= MAX_JSON_DEPTH, "{deepest} levels accepted: {text}");
                prop_assert_eq!(depth(&value), deepest);
            }
            Err(ApiError::Malformed(message)) => {
                prop_assert!(deepest > MAX_JSON_DEPTH, "{deepest} levels refused ({message}): {text}");
                prop_assert!(message.contains("nested"), "{message}");
            }
            Err(other) => prop_assert!(false, "{text}: {other:?}"),
        }
    }
}
