//! Verifying the live read models against the stream: the events up to
//! the projectors' recorded position are folded again, window by window,
//! and each expected row is compared with the row the table holds for the
//! same stream sequence. Every difference is reported: a missing row, a row
//! that should not be there, a row that differs.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use tally_projector::fold::{fold_recorded, CatalogueRow, EngagementRow, LateRow};
use tally_shared::store::models::Models;

use crate::reader::{Reader, Start};
use crate::tables::{Model, FACTS_BY_SEQ};
use crate::{progress, Env};

/// Events folded and compared at once.
const WINDOW: usize = 100_000;

/// One row that is not as the stream says it should be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub model: String,
    pub seq: u64,
    pub tenant: String,
    /// The row the stream gives; `None`: there should be no row.
    pub expected: Option<Value>,
    /// The row the table holds; `None`: it is missing.
    pub found: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |row: &Option<Value>| match row {
            Some(row) => row.to_string(),
            None => "(no row)".into(),
        };
        write!(
            f,
            "{} seq {} (tenant {}): expected {}, found {}",
            self.model,
            self.seq,
            self.tenant,
            show(&self.expected),
            show(&self.found)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every event up to this sequence was checked.
    pub position: u64,
    pub events: u64,
    pub differences: Vec<Difference>,
}

/// A fact row: its sequence and tenant.
trait Fact: clickhouse::RowOwned + clickhouse::RowRead + Serialize + PartialEq {
    fn seq(&self) -> u64;
    fn tenant(&self) -> &str;
}

macro_rules! fact {
    ($($row:ty),*) => {$(
        impl Fact for $row {
            fn seq(&self) -> u64 {
                self.seq
            }
            fn tenant(&self) -> &str {
                &self.tenant
            }
        }
    )*};
}
fact!(EngagementRow, CatalogueRow, LateRow, SeqFact);

/// A row of `facts_by_seq`: an engagement fact's summed columns, which the
/// rollups read (ADR 0006).
#[derive(Debug, PartialEq, clickhouse::Row, Serialize, serde::Deserialize)]
struct SeqFact {
    tenant: String,
    seq: u64,
    occurred_at: u32,
    platform: String,
    influencer_id: String,
    post_id: String,
    campaign_id: String,
    likes: i8,
    shares: u8,
    comments: u8,
    views: u64,
    clicks: u8,
    conversions: u8,
    follows: i8,
    sentiment: i16,
}

impl From<&EngagementRow> for SeqFact {
    fn from(row: &EngagementRow) -> SeqFact {
        SeqFact {
            tenant: row.tenant.clone(),
            seq: row.seq,
            occurred_at: row.occurred_at,
            platform: row.platform.clone(),
            influencer_id: row.influencer_id.clone(),
            post_id: row.post_id.clone(),
            campaign_id: row.campaign_id.clone(),
            likes: row.likes,
            shares: row.shares,
            comments: row.comments,
            views: row.views,
            clicks: row.clicks,
            conversions: row.conversions,
            follows: row.follows,
            sentiment: row.sentiment,
        }
    }
}

pub async fn verify(env: &mut Env, tenant: Option<&str>) -> anyhow::Result<Report> {
    let positions = Models::connect(env.live())
        .positions()
        .await
        .context("reading the projection position")?;
    let Some(position) = positions.iter().map(|p| p.position).min() else {
        anyhow::bail!("no projection position is recorded yet: is a projector running?");
    };
    if let Some(tenant) = tenant {
        crate::check_tenant(tenant)?;
    }
    let client = env.client(env.live());
    let mut report = Report {
        position,
        events: 0,
        differences: Vec::new(),
    };
    let subject = tenant.map_or(String::new(), |t| format!("tally.events.{t}.>"));
    let mut reader = Reader::open(&env.events, &subject, Start::Beginning, Some(position)).await?;
    let bar = progress::events("verify", reader.remaining());
    let mut checked_to = 0;
    let (options, quarantine) = (env.fold_options(), env.quarantine());
    while let Some(batch) = reader.next_batch(WINDOW).await? {
        let last = batch.last().map_or(checked_to, |r| r.seq);
        let range = (checked_to + 1, last);
        let folded = fold_recorded(
            batch.iter().map(|r| (r.seq, &r.payload[..])),
            options,
            &quarantine,
        );
        let rows = folded.rows;
        let posts: Vec<CatalogueRow> = rows.posts().into_iter().cloned().collect();
        let by_seq: Vec<SeqFact> = rows.engagements.iter().map(SeqFact::from).collect();
        let d = &mut report.differences;
        let engagements = Model::Engagements.table();
        compare(&client, engagements, rows.engagements, range, tenant, d).await?;
        compare(&client, FACTS_BY_SEQ, by_seq, range, tenant, d).await?;
        let catalogue = Model::Catalogue.table();
        compare(&client, catalogue, rows.catalogue, range, tenant, d).await?;
        let post_catalogue = Model::PostCatalogue.table();
        compare(&client, post_catalogue, posts, range, tenant, d).await?;
        let late = Model::LateEvents.table();
        compare(&client, late, rows.late, range, tenant, d).await?;
        report.events += batch.len() as u64;
        bar.inc(batch.len() as u64);
        checked_to = last;
    }
    bar.finish_and_clear();
    // Rows between the last event read and the position (with a tenant
    // filter, other tenants' events lie there) must not exist either.
    if checked_to < position {
        let range = (checked_to + 1, position);
        let d = &mut report.differences;
        let c = &client;
        compare::<EngagementRow>(c, Model::Engagements.table(), vec![], range, tenant, d).await?;
        compare::<SeqFact>(c, FACTS_BY_SEQ, vec![], range, tenant, d).await?;
        compare::<CatalogueRow>(c, Model::Catalogue.table(), vec![], range, tenant, d).await?;
        compare::<CatalogueRow>(c, Model::PostCatalogue.table(), vec![], range, tenant, d).await?;
        compare::<LateRow>(c, Model::LateEvents.table(), vec![], range, tenant, d).await?;
    }
    Ok(report)
}

/// Compares `expected` (the rows of `range` of sequences) with what
/// `table` holds there.
async fn compare<R: Fact>(
    client: &clickhouse::Client,
    table: &str,
    expected: Vec<R>,
    (from, to): (u64, u64),
    tenant: Option<&str>,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let tenant_filter = if tenant.is_some() {
        "AND tenant = ?"
    } else {
        ""
    };
    // `FINAL` merges the rows of one sorting key into the last written.
    // `facts_by_seq`'s key is the sequence alone, so there it would hide a
    // wrong row behind a right one, which a roll could still read: read
    // every row, and take identical ones (a redelivery's) once.
    let merge = if table == FACTS_BY_SEQ { "" } else { "FINAL" };
    let sql =
        format!("SELECT ?fields FROM {table} {merge} WHERE seq >= ? AND seq <= ? {tenant_filter}");
    let mut query = client.query(&sql).bind(from).bind(to);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    let found_rows: Vec<R> = query
        .fetch_all()
        .await
        .with_context(|| format!("reading {table}"))?;
    // Several rows can hold one sequence (FINAL merges rows of the same
    // sorting key only): every one but the expected row is a difference.
    let mut found: BTreeMap<u64, Vec<R>> = BTreeMap::new();
    for row in found_rows {
        let held = found.entry(row.seq()).or_default();
        if !held.contains(&row) {
            held.push(row);
        }
    }
    let json = |row: &R| serde_json::to_value(row).expect("rows serialise");
    for row in expected {
        if tenant.is_some_and(|t| t != row.tenant()) {
            continue;
        }
        let held = found.entry(row.seq()).or_default();
        match held.iter().position(|h| *h == row) {
            Some(same) => {
                held.remove(same);
            }
            None => {
                let other = (!held.is_empty()).then(|| held.remove(0));
                differences.push(Difference {
                    model: table.to_owned(),
                    seq: row.seq(),
                    tenant: row.tenant().to_owned(),
                    expected: Some(json(&row)),
                    found: other.as_ref().map(json),
                });
            }
        }
    }
    for (seq, held) in found {
        for row in held {
            differences.push(Difference {
                model: table.to_owned(),
                seq,
                tenant: row.tenant().to_owned(),
                expected: None,
                found: Some(json(&row)),
            });
        }
    }
    Ok(())
}
