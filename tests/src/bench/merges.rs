//! Which tables ClickHouse's merges worked on over a phase, from its part
//! log (`system.part_log`, which the harness's ClickHouse configuration
//! turns on): the server-wide counters say how much merging there was, this
//! says where. A table much smaller than the parts ClickHouse likes to
//! merge is rewritten whole on every insert, so a few hundred inserted rows
//! can cost millions of merged ones.

use super::report::grouped;

/// One table's part log over a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMerges {
    /// `database.table`: the rebuild's and the raw limits' databases hold
    /// tables of the same names.
    pub table: String,
    /// Merges that ended in the phase.
    pub merges: u64,
    /// Rows of the parts the merges wrote (what they read, less the rows
    /// that collapsed).
    pub merged_rows: u64,
    /// Summed duration of the merges (they run on background threads, so
    /// this can exceed the phase's length).
    pub merge_ms: u64,
    /// Rows inserted (new parts).
    pub inserted_rows: u64,
}

/// The part log's answer for every table since `from` (seconds since the
/// epoch): `database.table, merges, merged rows, merge ms, inserted rows`.
/// Event types by number (1 a new part, 2 a merge), which ClickHouse 18.16
/// and current releases share; their names differ.
pub fn query(from: u64) -> String {
    format!(
        "SELECT concat(database, '.', table), countIf(toInt8(event_type) = 2), \
         sumIf(rows, toInt8(event_type) = 2), sumIf(duration_ms, toInt8(event_type) = 2), \
         sumIf(rows, toInt8(event_type) = 1) FROM system.part_log \
         WHERE event_time >= toDateTime({from}) \
         GROUP BY database, table FORMAT TSV"
    )
}

/// The tables in the answer to [`query`]; `None` if it is not one (an
/// error text: no part log on this server).
pub fn parse(answer: &str) -> Option<Vec<TableMerges>> {
    answer
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [table, merges, merged_rows, merge_ms, inserted_rows] = fields[..] else {
                return None;
            };
            let number = |s: &str| s.parse::<u64>().ok();
            Some(TableMerges {
                table: table.to_owned(),
                merges: number(merges)?,
                merged_rows: number(merged_rows)?,
                merge_ms: number(merge_ms)?,
                inserted_rows: number(inserted_rows)?,
            })
        })
        .collect()
}

/// Tables shown in a note, at most.
const SHOWN: usize = 3;

/// The tables that merged most over a phase of `seconds`, as a note:
/// "merging (seconds of merges per second): tally.late_events 0.35 (285 merges
/// of 17,059,769 rows for 8,680 inserted), …". Tables that merged less than
/// 0.01 s per second are left out; `None` when none is left.
pub fn note(mut tables: Vec<TableMerges>, seconds: f64) -> Option<String> {
    let seconds = seconds.max(1e-3);
    let rate = |t: &TableMerges| t.merge_ms as f64 / 1000.0 / seconds;
    tables.retain(|t| rate(t) >= 0.01);
    tables.sort_by(|a, b| b.merge_ms.cmp(&a.merge_ms).then(a.table.cmp(&b.table)));
    let shown: Vec<String> = tables
        .iter()
        .take(SHOWN)
        .map(|t| {
            format!(
                "{} {:.2} ({} merge{} of {} rows for {} inserted)",
                t.table,
                rate(t),
                grouped(t.merges as f64, 0),
                if t.merges == 1 { "" } else { "s" },
                grouped(t.merged_rows as f64, 0),
                grouped(t.inserted_rows as f64, 0)
            )
        })
        .collect();
    (!shown.is_empty()).then(|| {
        format!(
            "merging (seconds of merges per second): {}",
            shown.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, merges: u64, merged: u64, ms: u64, inserted: u64) -> TableMerges {
        TableMerges {
            table: name.to_owned(),
            merges,
            merged_rows: merged,
            merge_ms: ms,
            inserted_rows: inserted,
        }
    }

    #[test]
    fn the_part_log_answer_is_read_table_by_table() {
        let answer =
            "live.late_events\t285\t17059769\t10744\t8680\nlive.engagements\t55\t3956049\t4259\t440200\n";
        assert_eq!(
            parse(answer),
            Some(vec![
                table("live.late_events", 285, 17_059_769, 10_744, 8_680),
                table("live.engagements", 55, 3_956_049, 4_259, 440_200),
            ])
        );
        assert_eq!(parse(""), Some(vec![]));
        // No part log: ClickHouse answers with an error text.
        assert_eq!(
            parse("Code: 60, e.displayText() = DB::Exception: Table system.part_log doesn't exist"),
            None
        );
        assert_eq!(parse("live.late_events\t1\t2\tx\t4"), None);
    }

    #[test]
    fn the_note_names_the_tables_that_merged_most() {
        let tables = vec![
            table("live.facts_by_seq", 59, 4_608_834, 3_446, 440_200),
            table("live.projection_positions", 33, 264, 305, 1_144),
            table("live.late_events", 285, 17_059_769, 10_744, 8_680),
            table("live.engagements", 55, 3_956_049, 4_259, 440_200),
            table("live.rollups", 1, 10, 1_000, 20),
        ];
        assert_eq!(
            note(tables, 31.0).as_deref(),
            Some(
                "merging (seconds of merges per second): \
                 live.late_events 0.35 (285 merges of 17,059,769 rows for 8,680 inserted), \
                 live.engagements 0.14 (55 merges of 3,956,049 rows for 440,200 inserted), \
                 live.facts_by_seq 0.11 (59 merges of 4,608,834 rows for 440,200 inserted)"
            )
        );
        assert_eq!(
            note(
                vec![table("live.engagements", 1, 550_000, 3_100, 807_457)],
                31.0
            )
            .as_deref(),
            Some(
                "merging (seconds of merges per second): \
                 live.engagements 0.10 (1 merge of 550,000 rows for 807,457 inserted)"
            )
        );
        // Under 0.01 s per second is no merging to speak of.
        assert_eq!(
            note(
                vec![table("live.projection_positions", 33, 264, 305, 1_144)],
                31.0
            ),
            None
        );
        assert_eq!(note(vec![], 31.0), None);
    }
}
