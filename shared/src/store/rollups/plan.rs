//! Planning what to roll (ADR 0006): pure functions of the ranges done,
//! the position and the range size: the next range to roll or join
//! ([`next`]), the ranges a ranking reads ([`cover`]), and those a newer
//! base supersedes ([`superseded`]).

use super::{Range, BASE, BASE_EVERY};

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

/// The chain of done ranges of `level` that starts at `from`, in order
/// (one attempt per range).
fn chain(done: &[Range], level: u8, from: u64) -> Vec<Range> {
    let mut chain = Vec::new();
    let mut at = from;
    while let Some(next) = done
        .iter()
        .filter(|r| r.level == level && r.lo == at)
        .max_by_key(|r| r.hi)
    {
        chain.push(*next);
        at = next.hi;
    }
    chain
}

/// The next range to roll, given the ranges done, the position up to which
/// every event is projected, and the size of a level-0 range:
/// - a new base once the level-0 ranges after the last one cover
///   [`BASE_EVERY`] ranges' worth of sequences;
/// - else one level-0 range joining ranges at the end of the chain, once
///   [`BASE_EVERY`] of them can be joined (see [`joinable`]);
/// - else the level-0 range after the last one if the position has passed
///   its end. When the stream is `quiet` (the position has stood still),
///   the level-0 range ends at the position: rankings then read no facts
///   at all.
///
/// A base rewrites every cell of the history, so it waits for sequences,
/// not for ranges: counted in ranges, a stream that pauses every few
/// seconds (a short range each time) would rewrite its whole history every
/// four pauses. The ranges after the base are joined instead, a few at a
/// time, which rewrites only their own cells, so that a ranking still reads
/// a few ranges after the base (38 in the worst pattern found, the test
/// `ranges_that_halve_are_joined_in_few`).
pub fn next(done: &[Range], position: u64, size: u64, quiet: bool) -> Option<Plan> {
    let size = size.max(1);
    let base = done
        .iter()
        .filter(|r| r.level == BASE && r.lo == 0)
        .max_by_key(|r| r.hi);
    let from = base.map_or(0, |b| b.hi);
    let after = chain(done, 0, from);
    let covered = after.last().map_or(from, |r| r.hi) - from;
    if covered >= BASE_EVERY as u64 * size {
        return Some(Plan::Join {
            level: BASE,
            parts: base.into_iter().copied().chain(after).collect(),
        });
    }
    let joinable = joinable(&after);
    if joinable >= BASE_EVERY {
        return Some(Plan::Join {
            level: 0,
            parts: after[after.len() - joinable..].to_vec(),
        });
    }
    let lo = after.last().map_or(from, |r| r.hi);
    let hi = lo + size;
    if hi <= position {
        Some(Plan::Facts { lo, hi })
    } else if quiet && position > lo {
        Some(Plan::Facts { lo, hi: position })
    } else {
        None
    }
}

/// How many ranges at the end of `chain` a level-0 join would take: from
/// the last one back, each while it is no longer than all those after it
/// together (it stops before the first that is longer). A join so at least
/// doubles the span of every range it rewrites but the last: each event is
/// rewritten a few times at most (about log2 of four ranges), and a long
/// range (say the history of a stream that was never busy) is not
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

/// The ranges that a newer base supersedes: every recorded range (any
/// attempt) that ends at or before the base before the latest one, but that
/// base. Readers at the position choose the latest base and the ranges
/// after it; the previous base and the ranges between the two stay for a
/// reader at an older position (a page pinned to it), which otherwise
/// falls back to reading the facts.
pub fn superseded(recorded: &[Range]) -> Vec<Range> {
    let mut bases: Vec<u64> = recorded
        .iter()
        .filter(|r| r.level == BASE && r.lo == 0)
        .map(|r| r.hi)
        .collect();
    bases.sort_unstable();
    bases.dedup();
    let Some(&previous) = bases.len().checked_sub(2).and_then(|i| bases.get(i)) else {
        return Vec::new();
    };
    recorded
        .iter()
        .filter(|r| r.hi <= previous && !(r.level == BASE && r.lo == 0 && r.hi == previous))
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
    fn every_few_ranges_are_summed_with_the_base_into_a_new_base() {
        let done = level0(10, 10 * BASE_EVERY as u64);
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
        // Three more do not make a base; the fourth does, with the last base.
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
    }

    #[test]
    fn short_ranges_are_joined_and_make_no_base_before_full_ranges_worth() {
        let mut done = vec![r(BASE, 0, 40)];
        done.extend((0..BASE_EVERY as u64).map(|i| r(0, 40 + 2 * i, 42 + 2 * i)));
        // Four short ranges after the base: joined at level 0, not into a
        // new base (which would rewrite the history for 8 events).
        let Some(Plan::Join { level: 0, parts }) = next(&done, 48, 10, true) else {
            panic!("expected a level-0 join")
        };
        assert_eq!(parts, done[1..]);
        done.push(r(0, 40, 48));
        assert_eq!(chain(&done, 0, 40), [r(0, 40, 48)]);
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
    /// and the sequences that level-0 joins rewrote.
    fn roll_all(done: &mut Vec<Range>, position: u64, size: u64, quiet: bool) -> (usize, u64) {
        let (mut bases, mut rewritten) = (0, 0);
        while let Some(plan) = next(done, position, size, quiet) {
            let (lo, hi) = plan.bounds();
            match plan.level() {
                BASE => bases += 1,
                _ if matches!(plan, Plan::Join { .. }) => rewritten += hi - lo,
                _ => {}
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
    fn a_stream_that_pauses_often_makes_a_base_per_four_ranges_of_events() {
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
            assert!(ranges.len() <= 1 + 4 * BASE_EVERY, "{ranges:?}");
        }
        // A base per 400 events at most (a base takes every range after the
        // last one, at times a little more than 400), where a base per four
        // pauses made 1,250, each rewriting the history.
        assert!((55..=25_090 / 400).contains(&bases), "{bases} bases");
        // Joins rewrote each event a few times (at most log2 of a range,
        // about 7, if they all were joined).
        assert!(rewritten <= 7 * 25_090, "{rewritten} rewritten");
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
    fn ranges_two_bases_back_are_superseded() {
        let mut recorded = level0(10, 120);
        assert!(superseded(&recorded).is_empty());
        recorded.push(r(BASE, 0, 40));
        assert!(
            superseded(&recorded).is_empty(),
            "one base supersedes nothing"
        );
        recorded.push(r(BASE, 0, 80));
        assert_eq!(superseded(&recorded), level0(10, 40));
        // Every attempt of a superseded range goes; the previous base stays.
        let again = |range: Range| Range {
            attempt: 7_000 + range.attempt,
            ..range
        };
        recorded.extend([again(r(0, 0, 10)), again(r(BASE, 0, 40))]);
        let gone = superseded(&recorded);
        assert!(gone.contains(&again(r(0, 0, 10))));
        assert!(!gone.contains(&r(BASE, 0, 40)) && !gone.contains(&again(r(BASE, 0, 40))));
        // A third base supersedes the first.
        recorded.push(r(BASE, 0, 120));
        let gone = superseded(&recorded);
        assert!(gone.contains(&r(BASE, 0, 40)) && !gone.contains(&r(BASE, 0, 80)));
        assert!(gone.iter().all(|g| g.hi <= 80), "{gone:?}");
        // What stays covers the position from the latest base, a position
        // after the previous base from that one, and an older one not at
        // all (a ranking there reads the facts).
        let kept: Vec<Range> = recorded
            .iter()
            .filter(|r| !gone.contains(r))
            .copied()
            .collect();
        assert_eq!(cover(&kept, 125), (120, vec![r(BASE, 0, 120)]));
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
