//! The benchmark's results: one row per measure, each rate beside the raw
//! limit it is compared with; written as JSON, as a chart (SVG) and as a
//! table.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::load::Run;

/// One measure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub section: String,
    pub measure: String,
    /// Per second (events, requests or operations: `unit`).
    pub rate: Option<f64>,
    pub unit: String,
    /// The raw limit (another row's `measure`) the rate is compared with,
    /// and the ratio.
    pub vs: Option<String>,
    pub ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// Samples behind the latencies (or events behind a rate).
    pub n: u64,
    pub note: Option<String>,
}

impl Row {
    /// A rate without latencies.
    pub fn rate(section: &str, measure: &str, rate: f64, unit: &str, n: u64) -> Row {
        Row {
            section: section.into(),
            measure: measure.into(),
            rate: Some(rate),
            unit: unit.into(),
            vs: None,
            ratio: None,
            p50_ms: None,
            p99_ms: None,
            p999_ms: None,
            n,
            note: None,
        }
    }

    /// A load run: its event (or request, for `unit` "req") rate and latencies.
    pub fn run(section: &str, measure: &str, run: &Run, unit: &str) -> Row {
        let rate = if unit == "events" {
            run.events_per_second()
        } else {
            run.requests_per_second()
        };
        Row {
            p50_ms: finite(run.ms(50.0)),
            p99_ms: finite(run.ms(99.0)),
            p999_ms: finite(run.ms(99.9)),
            n: run.latencies.len() as u64,
            note: (run.failed() > 0).then(|| format!("not 2xx: {:?}", run.statuses)),
            ..Row::rate(section, measure, rate, unit, 0)
        }
    }

    /// [`Row::run`], noting when the open loop's slowest answer was due
    /// (UTC): a stall to look for in the servers' logs.
    pub fn open_run(section: &str, measure: &str, run: &Run, unit: &str) -> Row {
        let row = Row::run(section, measure, run, unit);
        match run.slowest {
            Some((latency, due)) => row.note(format!(
                "slowest {:.1} ms, due at {} UTC",
                latency.as_secs_f64() * 1000.0,
                clock(due)
            )),
            None => row,
        }
    }

    /// Latencies only.
    pub fn latency(section: &str, measure: &str, run: &Run) -> Row {
        Row {
            rate: None,
            unit: String::new(),
            ..Row::run(section, measure, run, "req")
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        let note = note.into();
        self.note = Some(match self.note {
            Some(old) => format!("{note}; {old}"),
            None => note,
        });
        self
    }
}

/// `text` safe in a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `x` with `digits` decimals and its thousands grouped by commas.
pub(crate) fn grouped(x: f64, digits: usize) -> String {
    let text = format!("{x:.digits$}");
    let (whole, fraction) = text.split_at(text.find('.').unwrap_or(text.len()));
    let (sign, digits) = whole.split_at(usize::from(whole.starts_with('-')));
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out + fraction
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// An aim of the issue, and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Aim {
    pub aim: String,
    pub measured: String,
    pub met: bool,
}

/// A service's peak resident memory.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub service: String,
    pub peak_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub size: String,
    pub started_at: String,
    pub machine: String,
    pub dataset: String,
    pub rows: Vec<Row>,
    pub memory: Vec<Memory>,
    pub aims: Vec<Aim>,
}

impl Report {
    /// Sets each row's ratio to the row it names in `vs`.
    pub fn compare(&mut self, measure: &str, vs: &str) {
        let limit = self
            .rows
            .iter()
            .find(|r| r.measure == vs)
            .and_then(|r| r.rate);
        if let Some(row) = self.rows.iter_mut().find(|r| r.measure == measure) {
            row.vs = Some(vs.to_owned());
            row.ratio = match (row.rate, limit) {
                (Some(rate), Some(limit)) if limit > 0.0 => Some(rate / limit),
                _ => None,
            };
        }
    }

    /// Sets a peer's row to Tally's ratio to it: `tally`'s rate over the
    /// peer's.
    pub fn compare_peer(&mut self, peer: &str, tally: &str) {
        let ours = self
            .rows
            .iter()
            .find(|r| r.measure == tally)
            .and_then(|r| r.rate);
        if let Some(row) = self.rows.iter_mut().find(|r| r.measure == peer) {
            row.vs = Some(format!("(Tally ÷ this: {tally})"));
            row.ratio = match (ours, row.rate) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
                _ => None,
            };
        }
    }

    pub fn row(&self, measure: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.measure == measure)
    }

    /// The printed table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<46} {:>12} {:<7} {:>7} {:>9} {:>9} {:>9} {:>8}  vs",
            "measure", "rate/s", "unit", "ratio", "p50 ms", "p99 ms", "p999 ms", "n"
        );
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = &row.section;
                let _ = writeln!(out, "-- {section}");
            }
            let num = |x: Option<f64>, digits: usize| {
                x.map_or("-".to_owned(), |x| format!("{x:.digits$}"))
            };
            let _ = writeln!(
                out,
                "{:<46} {:>12} {:<7} {:>7} {:>9} {:>9} {:>9} {:>8}  {}{}",
                row.measure,
                num(row.rate, 0),
                row.unit,
                row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}x")),
                num(row.p50_ms, 2),
                num(row.p99_ms, 2),
                num(row.p999_ms, 2),
                row.n,
                row.vs.as_deref().unwrap_or(""),
                row.note
                    .as_deref()
                    .map_or(String::new(), |n| format!("  ({n})")),
            );
        }
        let _ = writeln!(out, "-- peak resident memory");
        for m in &self.memory {
            let _ = writeln!(out, "{:<46} {:>9.1} MiB", m.service, m.peak_mib);
        }
        let _ = writeln!(out, "-- aims");
        for aim in &self.aims {
            let mark = if aim.met { "met    " } else { "NOT met" };
            let _ = writeln!(out, "{mark} {:<52} {}", aim.aim, aim.measured);
        }
        out
    }

    /// The results as Markdown, as the README shows them: the run, the
    /// table of measures (each ratio beside what it is to), peak memory
    /// and the aims.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run: `./dev bench {}`, {}. Machine: {}. Data: {}.\n",
            self.size, self.started_at, self.machine, self.dataset
        );
        let _ = writeln!(
            out,
            "| measure | rate/s | ratio | p50 ms | p99 ms | p99.9 ms | n |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = &row.section;
                let _ = writeln!(out, "| **{section}** | | | | | | |");
            }
            let ms = |x: Option<f64>| x.map_or("–".to_owned(), |x| grouped(x, 2));
            let rate = row.rate.map_or("–".to_owned(), |r| {
                format!("{} {}", grouped(r, 0), row.unit)
            });
            let ratio = match (row.ratio, &row.vs) {
                (Some(r), Some(vs)) => format!("{r:.2}× {}", cell(vs)),
                _ => "–".to_owned(),
            };
            let note = row
                .note
                .as_deref()
                .map_or(String::new(), |n| format!(" ({})", cell(n)));
            let _ = writeln!(
                out,
                "| {}{note} | {rate} | {ratio} | {} | {} | {} | {} |",
                cell(&row.measure),
                ms(row.p50_ms),
                ms(row.p99_ms),
                ms(row.p999_ms),
                grouped(row.n as f64, 0),
            );
        }
        let _ = writeln!(out, "\n| service | peak resident |\n|---|---:|");
        for m in &self.memory {
            let _ = writeln!(out, "| {} | {:.1} MiB |", m.service, m.peak_mib);
        }
        let _ = writeln!(out, "\n| aim | this run | |\n|---|---:|---|");
        for aim in &self.aims {
            let mark = if aim.met { "met" } else { "**not met**" };
            let _ = writeln!(
                out,
                "| {} | {} | {mark} |",
                cell(&aim.aim),
                cell(&aim.measured)
            );
        }
        out
    }

    /// The rates as horizontal bars on a logarithmic scale (SVG).
    pub fn chart(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let bars: Vec<(&Row, f64)> = self
            .rows
            .iter()
            .filter(|r| !r.measure.contains("half of saturation"))
            .filter_map(|r| r.rate.filter(|v| *v > 0.0).map(|v| (r, v)))
            .collect();
        let height = 120 + 34 * bars.len() as u32;
        let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = bars.iter().map(|b| b.1).fold(10.0, f64::max) * 3.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Tally benchmark ({}): rates per second", self.size),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(10)
            .build_cartesian_2d((1.0..top).log_scale(), 0.0..bars.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("per second (log scale)")
            .draw()?;
        let colour = |section: &str| match section {
            "raw limits" => RGBColor(150, 150, 150),
            "ingest" => RGBColor(66, 133, 244),
            "projection" => RGBColor(52, 168, 83),
            "like button" => RGBColor(234, 67, 53),
            _ => RGBColor(251, 188, 5),
        };
        for (i, (row, value)) in bars.iter().enumerate() {
            let y = (bars.len() - 1 - i) as f64;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(1.0, y + 0.15), (*value, y + 0.85)],
                colour(&row.section).mix(0.55).filled(),
            )))?;
            let ratio = row.ratio.map_or(String::new(), |r| {
                format!("  ({r:.2}x {})", row.vs.as_deref().unwrap_or(""))
            });
            chart.draw_series(std::iter::once(Text::new(
                format!("{}: {:.0} {}/s{ratio}", row.measure, value, row.unit),
                (1.2, y + 0.62),
                ("sans-serif", 14),
            )))?;
        }
        root.present()?;
        Ok(())
    }
}

/// `at` as a UTC time of day to the millisecond (`01:02:03.250`): what to
/// look for in the servers' logs.
pub fn clock(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(time::macros::format_description!(
            "[hour]:[minute]:[second].[subsecond digits:3]"
        ))
        .unwrap_or_default()
}

/// One stage's CPU per event, measured alone in a raw limit: the stage, the
/// µs of CPU per event of the processes doing it together, and each one's.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub stage: String,
    pub micros: f64,
    pub each: Vec<(String, f64)>,
}

impl Cost {
    pub fn new(stage: &str, (micros, each): (f64, Vec<(String, f64)>)) -> Cost {
        Cost {
            stage: stage.into(),
            micros,
            each,
        }
    }
}

/// The most events a second `cores` could carry if every event cost the
/// CPU of each of `stages`, as measured alone, and nothing more: the
/// machine's ceiling for a pipeline of those stages before any work of its
/// own (processes sharing the cores, not one of them, set it). `None`
/// without a cost.
pub fn cpu_ceiling(cores: f64, stages: &[Cost]) -> Option<f64> {
    let per_event: f64 = stages.iter().map(|s| s.micros).sum();
    (per_event > 0.0 && cores > 0.0).then(|| cores * 1e6 / per_event)
}

/// How a [`cpu_ceiling`] came about, for its row's note: "2 cores ÷ 14.4 µs
/// of CPU per event: consume + ack 10.4 (nats-server 6.9, tally-bench 3.5),
/// insert 4.0 (…)".
pub fn ceiling_note(cores: f64, stages: &[Cost]) -> String {
    let per_event: f64 = stages.iter().map(|s| s.micros).sum();
    let parts: Vec<String> = stages
        .iter()
        .map(|s| {
            let each: Vec<String> = s
                .each
                .iter()
                .map(|(name, us)| format!("{name} {us:.1}"))
                .collect();
            format!("{} {:.1} ({})", s.stage, s.micros, each.join(", "))
        })
        .collect();
    format!(
        "{cores} cores ÷ {per_event:.1} µs of CPU per event: {}",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(rows: Vec<Row>) -> Report {
        Report {
            size: "quick".into(),
            started_at: "now".into(),
            machine: "test".into(),
            dataset: "none".into(),
            rows,
            memory: vec![Memory {
                service: "tally-query".into(),
                peak_mib: 42.0,
            }],
            aims: vec![Aim {
                aim: "fast".into(),
                measured: "yes".into(),
                met: true,
            }],
        }
    }

    #[test]
    fn the_cpu_ceiling_divides_the_cores_by_every_stage_s_cost() {
        let consume = Cost::new(
            "consume + ack",
            (
                10.0,
                vec![("nats-server".into(), 7.0), ("tally-bench".into(), 3.0)],
            ),
        );
        let insert = Cost::new("insert", (6.0, vec![("clickhouse-server".into(), 6.0)]));
        let stages = [consume.clone(), insert];
        // 2 cores, 16 µs an event: 125,000 events a second.
        assert_eq!(cpu_ceiling(2.0, &stages), Some(125_000.0));
        assert_eq!(cpu_ceiling(1.0, &stages[..1]), Some(100_000.0));
        assert_eq!(
            ceiling_note(2.0, &stages),
            "2 cores ÷ 16.0 µs of CPU per event: consume + ack 10.0 (nats-server 7.0, \
             tally-bench 3.0), insert 6.0 (clickhouse-server 6.0)"
        );
        // Nothing measured, or no cores: no ceiling.
        assert_eq!(cpu_ceiling(2.0, &[]), None);
        assert_eq!(cpu_ceiling(0.0, &stages), None);
    }

    #[test]
    fn ratios_are_to_the_named_limit() {
        let mut r = report(vec![
            Row::rate("raw limits", "raw publish", 1000.0, "events", 1),
            Row::rate("ingest", "batch ingest", 700.0, "events", 1),
            Row::rate("ingest", "nothing to compare", 5.0, "events", 1),
        ]);
        r.compare("batch ingest", "raw publish");
        r.compare("nothing to compare", "a missing limit");
        r.compare_peer("raw publish", "batch ingest");
        assert_eq!(r.row("raw publish").unwrap().ratio, Some(0.7));
        assert_eq!(r.row("batch ingest").unwrap().ratio, Some(0.7));
        assert_eq!(r.row("nothing to compare").unwrap().ratio, None);
        let table = r.table();
        assert!(table.contains("0.70x"), "{table}");
        assert!(
            table.contains("42.0 MiB") && table.contains("met"),
            "{table}"
        );
    }

    #[test]
    fn the_markdown_has_every_row_ratio_and_aim() {
        let mut r = report(vec![
            Row::rate("raw limits", "raw publish", 123_456.7, "events", 1_000_000),
            Row::rate("ingest", "batch ingest", 86_419.7, "events", 2),
            Row::rate("like button", "redis", 1_000.0, "ops", 3),
        ]);
        r.compare("batch ingest", "raw publish");
        r.compare_peer("redis", "batch ingest");
        let md = r.markdown();
        assert!(md.contains("| **raw limits** |"), "{md}");
        assert!(md.contains("| raw publish | 123,457 events | – |"), "{md}");
        assert!(md.contains("| 0.70× raw publish |"), "{md}");
        assert!(
            md.contains("| 86.42× (Tally ÷ this: batch ingest) |"),
            "{md}"
        );
        assert!(md.contains("| 1,000,000 |"), "{md}");
        assert!(md.contains("| tally-query | 42.0 MiB |"), "{md}");
        assert!(md.contains("| fast | yes | met |"), "{md}");
        let mut piped = report(vec![Row::rate("x", "a | b", 1.0, "ops", 1)]);
        piped.aims.clear();
        assert!(piped.markdown().contains("| a \\| b |"));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0.0, 0), "0");
        assert_eq!(grouped(999.0, 0), "999");
        assert_eq!(grouped(1000.0, 0), "1,000");
        assert_eq!(grouped(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(grouped(-12_345.0, 0), "-12,345");
    }

    #[test]
    fn a_runs_row_has_its_percentiles_and_failures() {
        let run = Run {
            elapsed: Duration::from_secs(2),
            ok: 3,
            events: 300,
            statuses: [(202, 3), (503, 1)].into_iter().collect(),
            latencies: [1, 2, 3, 4].map(Duration::from_millis).to_vec(),
            slowest: None,
        };
        let row = Row::run("ingest", "batch", &run, "events");
        assert_eq!(row.rate, Some(150.0));
        assert_eq!((row.p50_ms, row.p99_ms, row.n), (Some(2.0), Some(4.0), 4));
        assert!(row.note.unwrap().contains("503"));
        assert_eq!(Row::run("x", "y", &run, "req").rate, Some(1.5));
        assert_eq!(
            Row::open_run("x", "y", &run, "req"),
            Row::run("x", "y", &run, "req")
        );
        let stalled = Run {
            slowest: Some((
                Duration::from_millis(847),
                std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(3_723_250),
            )),
            ..run
        };
        let note = Row::open_run("x", "y", &stalled, "req").note.unwrap();
        assert!(
            note.starts_with("slowest 847.0 ms, due at 01:02:03.250 UTC; not 2xx"),
            "{note}"
        );
    }

    #[test]
    fn the_chart_is_an_svg_with_every_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let r = report(vec![
            Row::rate("raw limits", "raw publish", 120_000.0, "events", 1),
            Row::rate("like button", "likes", 900.0, "ops", 1),
        ]);
        r.chart(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("raw publish") && svg.contains("likes"));
    }
}
