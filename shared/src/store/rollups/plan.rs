//! Planning what to roll (ADR 0006): pure functions of the ranges done,
//! the position and the range size: the next range to roll or join
//! ([`next`]), the ranges a ranking reads ([`cover`]), and those a newer
//! base supersedes ([`superseded`]).

use super::{Range, BASE, JOIN_FEWEST};

/// What to roll next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Sum the facts of `(lo, hi]`.
    Facts { lo: u64, hi: u64 },
    /// Sum `parts`, consecutive ranges (the base, then level-0 ones).
    Join { level: u8, parts: Vec<Range> },
}

impl Plan {
    pub fn level(&self) -> u8 {
        match self {
            Plan::Facts { .. } => 0,
            Plan::Join { level, .. } => *level,
        }
    }

    /// The sequences it covers, `(lo, hi]`.
    pub fn bounds(&self) -> (u64, u64) {
        match self {
            Plan::Facts { lo, hi } => (*lo, *hi),
            Plan::Join { parts, .. } => (
                parts.first().map_or(0, |p| p.lo),
                parts.last().map_or(0, |p| p.hi),
            ),
        }
    }
}

/// The next range to roll, given the ranges done, the position up to which
/// every event is projected, and the size of a level-0 range:
/// - the whole chain from the start joined into a new base, once the
///   ranges after its first span [`JOIN_FEWEST`] full ranges and an
///   [`BASE_AHEAD`]th of that first one (see [`rebased`]);
/// - ranges at the end of the chain joined into one, once [`JOIN_FEWEST`]
///   of them can be (see [`joinable`]): a new base if the join starts at
///   the start of the stream, else a level-0 range;
/// - else the level-0 range after the chain if the position has passed
///   its end. When the stream is `quiet` (the position has stood still),
///   the level-0 range ends at the position: rankings then read no facts
///   at all.
pub fn next(done: &[Range], position: u64, size: u64, quiet: bool) -> Option<Plan> {
    let size = size.max(1);
    let (lo, chain) = cover(done, u64::MAX);
    if rebased(&chain, size) {
        return Some(Plan::Join {
            level: BASE,
            parts: chain,
        });
    }
    let joinable = joinable(&chain);
    if joinable >= JOIN_FEWEST {
        let parts = chain[chain.len() - joinable..].to_vec();
        let level = if parts[0].lo == 0 { BASE } else { 0 };
        return Some(Plan::Join { level, parts });
    }
    let hi = lo + size;
    if hi <= position {
        Some(Plan::Facts { lo, hi })
    } else if quiet && position > lo {
        Some(Plan::Facts { lo, hi: position })
    } else {
        None
    }
}

/// How much longer than the ranges after it the base may be: a ranking
/// reads the base and the ranges after it, whose cells are at most their
/// events (and at most every cell of the history each).
pub const BASE_AHEAD: u64 = 8;

/// Whether the whole chain is due to be joined into a new base: the
/// ranges after its first span at least [`JOIN_FEWEST`] full ranges and an
/// [`BASE_AHEAD`]th of the first.
///
/// The trade is between what rolling rewrites and what a ranking reads.
/// A base holds every cell (tenant, minute, attribution) of the history.
/// Made every [`JOIN_FEWEST`] ranges, it rewrote the history every 262,144
/// events, without bound. Made only when the history doubled, it left a
/// chain of ranges each as long as all those after it, and where events
/// of every minute come in every range (a history loaded at once, say),
/// each of them holds most of the history's cells: at 1,000,000 posts and
/// 10,000,000 events a ranking read base and ranges of about 5 million
/// rows, 120 ms at the median against 21 ms with a base per four ranges.
/// Rewritten once the ranges after it reach an eighth of it, the base is
/// rewritten about nine times the history's length in all (a geometric
/// series of ratio 8/9), no more as the history grows, and a ranking reads
/// at most the base's cells and an eighth of the history's events more.
fn rebased(chain: &[Range], size: u64) -> bool {
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
        return false;
    };
    let after = last.hi - first.hi;
    chain.len() > 1
        && after >= JOIN_FEWEST as u64 * size
        && after * BASE_AHEAD >= first.hi - first.lo
}

/// How many ranges at the end of `chain` a join would take: from the last
/// one back, each while it is no longer than all those after it together
/// (it stops before the first that is longer). A join so at least doubles
/// the span of every range it rewrites but the last: each event is
/// rewritten about log2 of the history's length times at most, and a long
/// range (the history, or that of a stream that was never busy) is not
/// rewritten with every pause after it.
fn joinable(chain: &[Range]) -> usize {
    let mut after = 0;
    chain
        .iter()
        .rev()
        .take_while(|r| {
            let span = r.hi - r.lo;
            let take = after == 0 || span <= after;
            after += span;
            take
        })
        .count()
}

/// Sequences behind the end of the rollups from which on a reader's
/// position is still covered as far as it was (see [`superseded`]), in
/// level-0 ranges: twice [`JOIN_FEWEST`].
const KEPT_RANGES: u64 = 2 * JOIN_FEWEST as u64;

/// The ranges that newer joins supersede: every recorded range (any
/// attempt) that no reader at a position from `KEPT_RANGES` level-0
/// ranges of `size` behind the end of the rollups on would choose. Readers
/// at those positions find the ranges they found before; a reader at an
/// older position (a page pinned to it) reads the facts past the ranges
/// still kept.
pub fn superseded(recorded: &[Range], size: u64) -> Vec<Range> {
    let end = cover(recorded, u64::MAX).0;
    let kept_from = end.saturating_sub(KEPT_RANGES * size.max(1));
    // A reader's cover changes only where a range ends.
    let mut positions: Vec<u64> = recorded
        .iter()
        .map(|r| r.hi)
        .filter(|&hi| hi > kept_from)
        .chain([kept_from])
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let chosen: std::collections::HashSet<(u8, u64, u64)> = positions
        .iter()
        .flat_map(|&position| cover(recorded, position).1)
        .map(|r| (r.level, r.lo, r.hi))
        .collect();
    recorded
        .iter()
        .filter(|r| !chosen.contains(&(r.level, r.lo, r.hi)))
        .copied()
        .collect()
}

/// The fewest done ranges that cover `(0, R]` with `R` as high as possible
/// but not past `position`, and `R`. With nothing rolled, `R` is 0.
pub fn cover(done: &[Range], position: u64) -> (u64, Vec<Range>) {
    let mut ranges = Vec::new();
    let mut at = 0;
    while let Some(next) = done
        .iter()
        .filter(|r| r.lo == at && r.hi <= position)
        .max_by_key(|r| (r.hi, r.level))
    {
        ranges.push(*next);
        at = next.hi;
    }
    (at, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(level: u8, lo: u64, hi: u64) -> Range {
        Range {
            level,
            lo,
            hi,
            attempt: lo * 100 + u64::from(level),
        }
    }

    /// Level-0 ranges of `size` up to `end`.
    fn level0(size: u64, end: u64) -> Vec<Range> {
        (0..end / size)
            .map(|i| r(0, i * size, (i + 1) * size))
            .collect()
    }

    #[test]
    fn the_first_range_waits_for_the_position_to_pass_its_end() {
        assert_eq!(next(&[], 9, 10, false), None);
        assert_eq!(
            next(&[], 10, 10, false),
            Some(Plan::Facts { lo: 0, hi: 10 })
        );
        let done = level0(10, 30);
        assert_eq!(next(&done, 39, 10, false), None);
        assert_eq!(
            next(&done, 45, 10, false),
            Some(Plan::Facts { lo: 30, hi: 40 })
        );
    }

    #[test]
    fn a_quiet_stream_is_rolled_up_to_its_position() {
        let done = level0(10, 20);
        assert_eq!(
            next(&done, 24, 10, true),
            Some(Plan::Facts { lo: 20, hi: 24 })
        );
        assert_eq!(next(&done, 20, 10, true), None);
        // A full range is rolled whole, quiet or not.
        assert_eq!(
            next(&done, 55, 10, true),
            Some(Plan::Facts { lo: 20, hi: 30 })
        );
        // The next range starts where the short one ended.
        let mut done = done;
        done.push(r(0, 20, 24));
        assert_eq!(
            next(&done, 34, 10, false),
            Some(Plan::Facts { lo: 24, hi: 34 })
        );
        assert_eq!(cover(&done, 100).0, 24);
    }

    #[test]
    fn the_base_is_joined_again_once_the_ranges_after_it_reach_an_eighth_of_it() {
        let done = level0(10, 10 * JOIN_FEWEST as u64);
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 10_000, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(parts, done);
        // Once summed, level 0 goes on from where it stopped.
        let mut done = done;
        done.push(r(BASE, 0, 40));
        assert_eq!(
            next(&done, 10_000, 10, false),
            Some(Plan::Facts { lo: 40, hi: 50 })
        );
        // Three more are not joined; the fourth makes a new base of all.
        done.extend((4..7).map(|i| r(0, i * 10, (i + 1) * 10)));
        assert_eq!(
            next(&done, 10_000, 10, false),
            Some(Plan::Facts { lo: 70, hi: 80 })
        );
        done.push(r(0, 70, 80));
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 10_000, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(parts[0], r(BASE, 0, 40));
        assert_eq!(
            parts.iter().map(|p| p.hi).collect::<Vec<_>>(),
            [40, 50, 60, 70, 80]
        );
        assert_eq!(Plan::Join { level: BASE, parts }.bounds(), (0, 80));
        // After a base of 48 ranges, four are joined at level 0 and the
        // base waits for six (an eighth of it).
        let mut done = vec![r(BASE, 0, 480)];
        done.extend((48..52).map(|i| r(0, i * 10, (i + 1) * 10)));
        let Some(Plan::Join { level: 0, parts }) = next(&done, 10_000, 10, false) else {
            panic!("expected a level-0 join")
        };
        assert_eq!(Plan::Join { level: 0, parts }.bounds(), (480, 520));
        done.push(r(0, 480, 520));
        done.push(r(0, 520, 530));
        assert_eq!(
            next(&done, 10_000, 10, false),
            Some(Plan::Facts { lo: 530, hi: 540 })
        );
        done.push(r(0, 530, 540));
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 10_000, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(
            parts.iter().map(|p| (p.lo, p.hi)).collect::<Vec<_>>(),
            [(0, 480), (480, 520), (520, 530), (530, 540)]
        );
    }

    #[test]
    fn short_ranges_are_joined_and_make_no_base_before_full_ranges_worth() {
        let mut done = vec![r(BASE, 0, 40)];
        done.extend((0..JOIN_FEWEST as u64).map(|i| r(0, 40 + 2 * i, 42 + 2 * i)));
        // Four short ranges after the base: joined at level 0, not into a
        // new base (which would rewrite the history for 8 events).
        let Some(Plan::Join { level: 0, parts }) = next(&done, 48, 10, true) else {
            panic!("expected a level-0 join")
        };
        assert_eq!(parts, done[1..]);
        done.push(r(0, 40, 48));
        assert_eq!(cover(&done, 48), (48, vec![r(BASE, 0, 40), r(0, 40, 48)]));
        // A full range then follows it, and a short one.
        assert_eq!(
            next(&done, 60, 10, false),
            Some(Plan::Facts { lo: 48, hi: 58 })
        );
        done.push(r(0, 48, 58));
        assert_eq!(
            next(&done, 60, 10, true),
            Some(Plan::Facts { lo: 58, hi: 60 })
        );
        done.push(r(0, 58, 60));
        assert_eq!(next(&done, 60, 10, true), None);
        // Once the ranges after the base span four full ones, all of them
        // make the new base.
        done.extend([r(0, 60, 70), r(0, 70, 80)]);
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 80, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(
            parts.iter().map(|p| (p.lo, p.hi)).collect::<Vec<_>>(),
            [(0, 40), (40, 48), (48, 58), (58, 60), (60, 70), (70, 80)]
        );
    }

    #[test]
    fn a_join_takes_no_range_longer_than_those_after_it() {
        let spans = |spans: &[u64]| {
            let mut at = 0;
            spans
                .iter()
                .map(|s| {
                    at += s;
                    r(0, at - s, at)
                })
                .collect::<Vec<_>>()
        };
        // The history of a quiet stream stays out of a join of its pauses.
        assert_eq!(joinable(&spans(&[50, 3, 3, 3, 3])), 4);
        assert_eq!(joinable(&spans(&[12, 3, 3, 3, 3])), 5);
        assert_eq!(joinable(&spans(&[16, 8, 4, 2, 1])), 1);
        assert_eq!(joinable(&spans(&[1, 1, 1, 60])), 4);
        // A full range too, once those after it are as long.
        assert_eq!(joinable(&spans(&[100, 30, 30, 30])), 3);
        assert_eq!(joinable(&spans(&[100, 30, 30, 40])), 4);
        assert_eq!(joinable(&[]), 0);
    }

    /// Rolls what [`next`] asks for until nothing is due: the bases made
    /// and the sequences that joins rewrote (bases included).
    fn roll_all(done: &mut Vec<Range>, position: u64, size: u64, quiet: bool) -> (usize, u64) {
        let (mut bases, mut rewritten) = (0, 0);
        while let Some(plan) = next(done, position, size, quiet) {
            let (lo, hi) = plan.bounds();
            if plan.level() == BASE {
                bases += 1;
            }
            if matches!(plan, Plan::Join { .. }) {
                rewritten += hi - lo;
            }
            done.push(Range {
                level: plan.level(),
                lo,
                hi,
                attempt: done.len() as u64,
            });
        }
        (bases, rewritten)
    }

    #[test]
    fn a_stream_that_pauses_often_rewrites_each_event_a_few_times() {
        // A history of 90 events rolled as one short range, then bursts of
        // 1 to 9 events, each followed by a pause, with ranges of 100:
        // 5,000 pauses, 25,000 events after the history.
        let size = 100;
        let mut done = Vec::new();
        let (mut position, mut bases, mut rewritten) = (90, 0, 0);
        roll_all(&mut done, position, size, true);
        for i in 0..5_000 {
            position += i * 7 % 9 + 1;
            for quiet in [false, true] {
                let (b, r) = roll_all(&mut done, position, size, quiet);
                bases += b;
                rewritten += r;
            }
            // Rolled up to the position, from a few ranges.
            let (rolled, ranges) = cover(&done, position);
            assert_eq!(rolled, position);
            assert!(ranges.len() <= 4 * JOIN_FEWEST, "{ranges:?}");
        }
        // A base each time the history grew by an eighth, once it spanned
        // 32 full ranges: 25 (where a base per four pauses made 1,250,
        // each rewriting the history, and a base per 400 events 62).
        assert!((20..=30).contains(&bases), "{bases} bases");
        // Joins rewrote the events 10.6 times in all (5.7 with a base only
        // each time the history doubled).
        assert!(rewritten <= 12 * 25_090, "{rewritten} rewritten");
    }

    #[test]
    fn a_long_busy_history_is_rewritten_a_few_times_per_event_and_read_in_few_rows() {
        // 4,096 full ranges, rolled one by one as the position passes them.
        let size = 10;
        let mut done = Vec::new();
        let (mut bases, mut rewritten, mut longest, mut after_base) = (0, 0, 0, 0.0f64);
        for i in 1..=4_096 {
            let (b, r) = roll_all(&mut done, i * size, size, false);
            bases += b;
            rewritten += r;
            let (rolled, ranges) = cover(&done, i * size);
            assert_eq!(rolled, i * size);
            longest = longest.max(ranges.len());
            // What a ranking reads besides the base: at most the events of
            // the ranges after it.
            let after: u64 = ranges.iter().skip(1).map(|r| r.hi - r.lo).sum();
            if i > 8 * JOIN_FEWEST as u64 {
                after_base = after_base.max(after as f64 / (i * size) as f64);
            }
        }
        // A base every four ranges up to 32, then each time the history
        // grew by an eighth: 48 (a base every four ranges would have made
        // 1,024, rewriting 2,099,200 ranges' worth: 4 + 8 + ... + 4,096).
        assert_eq!(bases, 48, "{bases} bases");
        // Joins rewrote 11.7 times the history (bases alone about nine;
        // with a base only each time the history doubled, 6 times, but a
        // ranking then read up to half of the history's events besides it).
        assert!(rewritten <= 12 * 4_096 * size, "{rewritten} rewritten");
        assert!(
            after_base <= 1.0 / 8.0 + 0.001,
            "{after_base} of the history"
        );
        assert!(longest <= 10, "{longest} ranges");
    }

    #[test]
    fn ranges_that_halve_are_joined_in_few() {
        // The worst pattern found: quiet ranges of 3 * 2^k - 2 events, each
        // followed by two of one event, k falling from 13 to 2; then full
        // ranges and the same again, three times, at the default size.
        let size = 65_536;
        let mut done = vec![r(BASE, 0, 1_000_000), r(0, 0, 1_000_000)];
        let mut position = 1_000_000;
        let mut longest = 0;
        for _ in 0..4 {
            for k in (2..=13).rev() {
                for span in [3 * (1 << k) - 2, 1, 1] {
                    position += span;
                    roll_all(&mut done, position, size, true);
                    longest = longest.max(cover(&done, position).1.len());
                }
            }
            position += size;
            roll_all(&mut done, position, size, false);
        }
        assert_eq!(cover(&done, position).0, position);
        assert!(longest <= 40, "{longest} ranges");
    }

    #[test]
    fn ranges_no_recent_reader_chooses_are_superseded() {
        // Readers from 80 sequences (eight ranges of 10) behind the end of
        // the rollups on find what they found before.
        let size = 10;
        let mut recorded = level0(10, 40);
        recorded.push(r(BASE, 0, 40));
        // No reader chooses (30, 40] any more: one at 40 or later chooses
        // the base, one before 40 stops at 30.
        assert_eq!(superseded(&recorded, size), [r(0, 30, 40)]);
        recorded.extend(level0(10, 110).into_iter().skip(4));
        assert_eq!(superseded(&recorded, size), [r(0, 30, 40)]);
        // At 120, a reader at 40 or later chooses the base of 40.
        recorded.push(r(0, 110, 120));
        assert_eq!(superseded(&recorded, size), level0(10, 40));
        // Every attempt of a superseded range goes; those of a range still
        // chosen stay.
        let again = |range: Range| Range {
            attempt: 7_000 + range.attempt,
            ..range
        };
        recorded.extend([again(r(0, 0, 10)), again(r(BASE, 0, 40))]);
        let gone = superseded(&recorded, size);
        assert!(gone.contains(&again(r(0, 0, 10))));
        assert!(!gone.contains(&r(BASE, 0, 40)) && !gone.contains(&again(r(BASE, 0, 40))));
        // A newer base: the one before and the ranges after it stay while
        // a reader at 40 or later still chooses them.
        recorded.push(r(BASE, 0, 80));
        let gone = superseded(&recorded, size);
        assert!(!gone.contains(&r(BASE, 0, 40)) && !gone.contains(&r(0, 60, 70)));
        assert!(gone.contains(&r(0, 70, 80)));
        // At 160 they go.
        recorded.extend(level0(10, 160).into_iter().skip(12));
        let gone = superseded(&recorded, size);
        assert!(gone.contains(&r(BASE, 0, 40)) && !gone.contains(&r(BASE, 0, 80)));
        assert!(gone.iter().all(|g| g.hi <= 80), "{gone:?}");
        // What stays covers the positions from 80 on as before, and an
        // older one not at all (a ranking there reads the facts).
        let kept: Vec<Range> = recorded
            .iter()
            .filter(|r| !gone.contains(r))
            .copied()
            .collect();
        for position in 80..=175 {
            assert_eq!(cover(&kept, position).0, cover(&recorded, position).0);
        }
        assert_eq!(cover(&kept, 95), (90, vec![r(BASE, 0, 80), r(0, 80, 90)]));
        assert_eq!(cover(&kept, 55), (0, vec![]));
    }

    #[test]
    fn the_cover_takes_the_largest_ranges_and_stops_at_the_position() {
        let mut done = level0(10, 200);
        done.push(r(BASE, 0, 160));
        let (rolled, ranges) = cover(&done, 10_000);
        assert_eq!(rolled, 200);
        assert_eq!(ranges[0], r(BASE, 0, 160));
        assert_eq!(ranges.len(), 1 + 4);
        // A position inside the large range falls back to the small ones.
        let (rolled, ranges) = cover(&done, 155);
        assert_eq!(rolled, 150);
        assert!(ranges.iter().all(|r| r.level == 0));
        // A position inside a range stops before it.
        assert_eq!(cover(&done, 175).0, 170);
        assert_eq!(cover(&[], 175), (0, vec![]));
    }

    #[test]
    fn a_gap_ends_the_cover() {
        let done = vec![r(0, 0, 10), r(0, 20, 30)];
        assert_eq!(cover(&done, 100), (10, vec![r(0, 0, 10)]));
    }

    #[test]
    fn ranges_of_another_size_chain_on() {
        // The size was changed from 10 to 25 after 30 events.
        let mut done = level0(10, 30);
        assert_eq!(
            next(&done, 100, 25, false),
            Some(Plan::Facts { lo: 30, hi: 55 })
        );
        done.push(r(0, 30, 55));
        assert_eq!(cover(&done, 100).0, 55);
    }
}
