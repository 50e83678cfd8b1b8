//! The workload: like operations read from NDJSON, split over the workers,
//! and the counts they must leave behind.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// What one operation does to its (post, user) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Like,
    Unlike,
}

/// One line of the ops file: `{"post":"p-17","user":"u-3","op":"like"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    pub post: String,
    pub user: String,
    pub op: Kind,
}

impl Op {
    pub fn like(post: &str, user: &str) -> Op {
        Op {
            post: post.to_owned(),
            user: user.to_owned(),
            op: Kind::Like,
        }
    }

    pub fn unlike(post: &str, user: &str) -> Op {
        Op {
            op: Kind::Unlike,
            ..Op::like(post, user)
        }
    }
}

/// Why an ops file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("reading the ops: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {source}")]
    Syntax {
        line: usize,
        source: serde_json::Error,
    },
    /// The peers differ on an inconsistent sequence (Redis counts a second
    /// like, the aggregate refuses it), so the input must not have one.
    #[error("line {line}: {op:?} of post {post:?} by user {user:?} does not follow the pair's previous op")]
    Inconsistent {
        line: usize,
        post: String,
        user: String,
        op: Kind,
    },
}

/// Reads NDJSON ops in order, skipping blank lines, and checks that each
/// pair alternates like, unlike, like… starting with a like.
pub fn parse(reader: impl BufRead) -> Result<Vec<Op>, OpsError> {
    let mut ops = Vec::new();
    let mut liked: HashSet<(String, String)> = HashSet::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line).map_err(|source| OpsError::Syntax {
            line: i + 1,
            source,
        })?;
        let pair = (op.post.clone(), op.user.clone());
        let consistent = match op.op {
            Kind::Like => liked.insert(pair),
            Kind::Unlike => liked.remove(&pair),
        };
        if !consistent {
            return Err(OpsError::Inconsistent {
                line: i + 1,
                post: op.post,
                user: op.user,
                op: op.op,
            });
        }
        ops.push(op);
    }
    Ok(ops)
}

/// FNV-1a: stable across runs, builds and platforms, unlike std's hasher,
/// so a user lands on the same worker every time.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Splits the ops over `workers` by a hash of the user, keeping file order
/// within each worker: every op of a (post, user) pair goes to one worker,
/// in order, while a hot post is touched by many workers at once. Returns
/// each worker's indices into `ops`.
pub fn partition(ops: &[Op], workers: usize) -> Vec<Vec<usize>> {
    let workers = workers.max(1);
    let mut parts = vec![Vec::new(); workers];
    for (i, op) in ops.iter().enumerate() {
        parts[(stable_hash(&op.user) % workers as u64) as usize].push(i);
    }
    parts
}

/// Likes minus unlikes per post: the count each peer must end with.
pub fn expected_counts(ops: &[Op]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for op in ops {
        *counts.entry(op.post.clone()).or_insert(0) += match op.op {
            Kind::Like => 1,
            Kind::Unlike => -1,
        };
    }
    counts
}

/// Posts whose `actual` count differs from the expected one (a post absent
/// from `actual` counts as 0), with (expected, actual).
pub fn mismatches(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
) -> Vec<(String, i64, i64)> {
    expected
        .iter()
        .filter_map(|(post, &want)| {
            let got = actual.get(post).copied().unwrap_or(0);
            (got != want).then(|| (post.clone(), want, got))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Vec<Op>, OpsError> {
        parse(text.as_bytes())
    }

    #[test]
    fn parses_likes_and_unlikes_skipping_blank_lines() {
        let ops = parsed(
            "{\"post\":\"p-1\",\"user\":\"u-1\",\"op\":\"like\"}\n\n\
             {\"post\":\"p-1\",\"user\":\"u-1\",\"op\":\"unlike\"}\n",
        )
        .unwrap();
        assert_eq!(ops, vec![Op::like("p-1", "u-1"), Op::unlike("p-1", "u-1")]);
    }

    #[test]
    fn rejects_bad_lines_with_their_number() {
        let check = |text: &str, line: usize| match parsed(text) {
            Err(OpsError::Syntax { line: got, .. }) => assert_eq!(got, line, "{text}"),
            other => panic!("{text}: expected a syntax error at line {line}, got {other:?}"),
        };
        check("{\"post\":\"p\",\"user\":\"u\",\"op\":\"love\"}", 1);
        check("{\"post\":\"p\",\"user\":\"u\"}", 1);
        check(
            "{\"post\":\"p\",\"user\":\"u\",\"op\":\"like\"}\n{\"post\":\"p\",\"user\":\"v\",\"op\":\"like\",\"x\":1}",
            2,
        );
        check("\nnot json", 2);
    }

    #[test]
    fn rejects_a_pair_that_does_not_alternate() {
        let check = |text: &str, line: usize| match parsed(text) {
            Err(OpsError::Inconsistent { line: got, .. }) => assert_eq!(got, line, "{text}"),
            other => panic!("{text}: expected an inconsistency at line {line}, got {other:?}"),
        };
        let like = "{\"post\":\"p\",\"user\":\"u\",\"op\":\"like\"}\n";
        let unlike = "{\"post\":\"p\",\"user\":\"u\",\"op\":\"unlike\"}\n";
        check(unlike, 1);
        check(&format!("{like}{like}"), 2);
        check(&format!("{like}{unlike}{unlike}"), 3);
        assert!(parsed(&format!("{like}{unlike}{like}")).is_ok());
    }

    #[test]
    fn partitioning_keeps_every_pair_on_one_worker_in_file_order() {
        let mut ops = Vec::new();
        for round in 0..3 {
            for user in 0..50 {
                for post in 0..4 {
                    let (post, user) = (format!("p-{post}"), format!("u-{user}"));
                    ops.push(if round % 2 == 0 {
                        Op::like(&post, &user)
                    } else {
                        Op::unlike(&post, &user)
                    });
                }
            }
        }
        let parts = partition(&ops, 7);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), ops.len());
        let mut owner = BTreeMap::new();
        for (worker, part) in parts.iter().enumerate() {
            assert!(
                part.windows(2).all(|w| w[0] < w[1]),
                "worker {worker} out of order"
            );
            for &i in part {
                let pair = (&ops[i].post, &ops[i].user);
                assert_eq!(
                    *owner.entry(pair).or_insert(worker),
                    worker,
                    "{pair:?} split"
                );
            }
        }
        // A hot post is spread over workers, not pinned to one.
        let touching_p0 = parts
            .iter()
            .filter(|part| part.iter().any(|&i| ops[i].post == "p-0"))
            .count();
        assert!(touching_p0 > 1, "p-0 touched by {touching_p0} workers");
    }

    #[test]
    fn partitioning_is_stable_and_handles_zero_workers() {
        let ops = vec![Op::like("p", "u-1"), Op::like("p", "u-2")];
        assert_eq!(partition(&ops, 4), partition(&ops, 4));
        assert_eq!(partition(&ops, 0), vec![vec![0, 1]]);
        // FNV-1a's published test vector.
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn expected_counts_are_likes_minus_unlikes_per_post() {
        let ops = vec![
            Op::like("a", "1"),
            Op::like("a", "2"),
            Op::like("b", "1"),
            Op::unlike("a", "1"),
            Op::unlike("b", "1"),
        ];
        let counts = expected_counts(&ops);
        assert_eq!(counts, BTreeMap::from([("a".into(), 1), ("b".into(), 0)]));
    }

    #[test]
    fn mismatches_treat_a_missing_post_as_zero() {
        let expected = BTreeMap::from([("a".into(), 2), ("b".into(), 0), ("c".into(), 1)]);
        let actual = BTreeMap::from([("a".into(), 2), ("c".into(), 3)]);
        assert_eq!(
            mismatches(&expected, &actual),
            vec![("c".to_string(), 1, 3)]
        );
    }
}
