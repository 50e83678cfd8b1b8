//! A tenant's history out and in, as NDJSON (gzip when the file name ends
//! in `.gz`, or on import when the file starts with gzip's magic bytes).
//!
//! **Export** writes each recorded event of the tenant, oldest first, as
//! one JSON object a line: the envelope the client sent plus
//! `schema_version`, `received_at` and `source` (the tenant is left out, so
//! the history can go into another tenant).
//!
//! **Import** puts each line through the same validation as live ingest
//! (judged at the line's `received_at`, as the original was, so a history
//! validates as it did then) and appends it with the same deduplication:
//! `Nats-Msg-Id = <tenant>:<event_id>` within JetStream's duplicate window,
//! and, beyond the window, the ids the tenant's history already holds are
//! skipped. Importing the same file twice stores nothing the second time.
//! `received_at` is kept, so lateness (and every read model) comes out as
//! it was.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};
use tally_command::Publisher;
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::reader::{Reader, Start};
use crate::{progress, Env};

/// Lines published at once on import.
const CHUNK: usize = 1_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exported {
    pub events: u64,
    /// Recorded messages that are not readable events (left out).
    pub unreadable: u64,
}

fn subject(tenant: &str) -> String {
    format!("tally.events.{tenant}.>")
}

/// Writes `tenant`'s history to `out` as NDJSON.
pub async fn export(env: &Env, tenant: &str, out: &mut dyn Write) -> anyhow::Result<Exported> {
    crate::check_tenant(tenant)?;
    let mut reader = Reader::open(&env.events, &subject(tenant), Start::Beginning, None).await?;
    let bar = progress::events("export", reader.remaining());
    let mut exported = Exported::default();
    while let Some(batch) = reader.next_batch(10_000).await? {
        for recorded in &batch {
            let Ok(stored) = StoredEvent::decode(&recorded.payload) else {
                exported.unreadable += 1;
                continue;
            };
            let mut line = serde_json::to_value(&stored).expect("events serialise");
            if let Value::Object(map) = &mut line {
                map.remove("tenant");
            }
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            exported.events += 1;
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    out.flush()?;
    Ok(exported)
}

/// [`export`] to a file, gzipped when its name ends in `.gz`.
pub async fn export_to(env: &Env, tenant: &str, path: &Path) -> anyhow::Result<Exported> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let file = std::io::BufWriter::new(file);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let exported = export(env, tenant, &mut gz).await?;
        gz.finish()?.flush()?;
        Ok(exported)
    } else {
        let mut file = file;
        export(env, tenant, &mut file).await
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// Newly stored.
    pub accepted: u64,
    /// Already in the tenant's history (stored once).
    pub duplicates: u64,
    /// Lines that are not valid events: `(line number, why)`.
    pub invalid: Vec<(u64, String)>,
}

/// Reads NDJSON history (plain or gzip) from `path` into `tenant`.
pub async fn import_from(env: &Env, tenant: &str, path: &Path) -> anyhow::Result<Imported> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let gzipped = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    let file = std::fs::File::open(path)?;
    let lines: Box<dyn BufRead> = if gzipped {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    import(env, tenant, lines).await
}

/// Imports NDJSON history from `lines` into `tenant`.
pub async fn import(env: &Env, tenant: &str, lines: impl BufRead) -> anyhow::Result<Imported> {
    crate::check_tenant(tenant)?;
    let mut known = known_ids(env, tenant).await?;
    let limits = Limits::from_config(&env.config.command);
    let publisher = Publisher::new(
        env.js.clone(),
        env.events.cached_info().config.name.clone(),
        Duration::from_millis(env.config.nats.publish_timeout_ms),
    );
    let bar = progress::events("import", 0);
    let mut imported = Imported::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for (number, line) in lines.lines().enumerate() {
        let number = number as u64 + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(tenant, &line, &limits) {
            Err(why) => imported.invalid.push((number, why)),
            Ok(stored) if !known.insert(stored.event.event_id.clone()) => {
                imported.duplicates += 1;
            }
            Ok(stored) => chunk.push(stored),
        }
        if chunk.len() == CHUNK {
            append(&publisher, &mut chunk, &mut imported).await?;
            bar.inc(CHUNK as u64);
        }
    }
    append(&publisher, &mut chunk, &mut imported).await?;
    bar.finish_and_clear();
    Ok(imported)
}

async fn append(
    publisher: &Publisher,
    chunk: &mut Vec<StoredEvent>,
    imported: &mut Imported,
) -> anyhow::Result<()> {
    for appended in publisher.append_all(chunk).await {
        match appended {
            Ok(appended) if appended.duplicate => imported.duplicates += 1,
            Ok(_) => imported.accepted += 1,
            // Nothing is lost: run the import again, what was stored is
            // then skipped.
            Err(e) => anyhow::bail!(
                "JetStream did not acknowledge an event ({e:?}); run the import again"
            ),
        }
    }
    chunk.clear();
    Ok(())
}

/// One history line: the envelope validated as live ingest does, at the
/// line's `received_at` (now when absent).
fn parse_line(tenant: &str, line: &str, limits: &Limits) -> Result<StoredEvent, String> {
    let mut object: Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err("not a JSON object".into()),
        Err(e) => return Err(format!("not JSON: {e}")),
    };
    let received_at = match object.remove("received_at") {
        None => OffsetDateTime::now_utc(),
        Some(Value::String(at)) => OffsetDateTime::parse(&at, &Rfc3339)
            .map_err(|_| "received_at is not an RFC 3339 time".to_owned())?,
        Some(_) => return Err("received_at is not an RFC 3339 time".into()),
    };
    for recorded_only in ["schema_version", "source", "tenant"] {
        object.remove(recorded_only);
    }
    let event = validate(&Value::Object(object), received_at, limits).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(StoredEvent::new(tenant, Source::Import, event, received_at))
}

/// The event ids `tenant`'s history holds.
async fn known_ids(env: &Env, tenant: &str) -> anyhow::Result<HashSet<String>> {
    let mut reader = Reader::open(&env.events, &subject(tenant), Start::Beginning, None).await?;
    let mut ids = HashSet::new();
    while let Some(batch) = reader.next_batch(10_000).await? {
        for recorded in batch {
            if let Ok(stored) = StoredEvent::decode(&recorded.payload) {
                ids.insert(stored.event.event_id);
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_validated_at_its_received_at_and_keeps_it() {
        let line = r#"{"schema_version":2,"received_at":"2020-01-01T00:01:00Z","source":"api",
            "event_id":"e1","type":"like","occurred_at":"2020-01-01T00:00:00Z","post_id":"p1"}"#;
        let stored = parse_line("acme", line, &Limits::default()).unwrap();
        assert_eq!(stored.tenant, "acme");
        assert_eq!(stored.source, Source::Import);
        assert_eq!(stored.received_at.unix_timestamp(), 1_577_836_860);
        assert_eq!(stored.event.event_id, "e1");
    }

    #[test]
    fn invalid_lines_say_why() {
        let limits = Limits::default();
        assert!(parse_line("acme", "[1]", &limits)
            .unwrap_err()
            .contains("object"));
        assert!(parse_line("acme", "{", &limits)
            .unwrap_err()
            .contains("JSON"));
        let no_type = r#"{"event_id":"e1","occurred_at":"2020-01-01T00:00:00Z"}"#;
        assert!(parse_line("acme", no_type, &limits)
            .unwrap_err()
            .contains("type"));
    }
}
