//! A sample workload, so the program can be tried alone: posts drawn by a
//! Zipf law (a few viral posts take most of the likes), users uniformly,
//! and a pair that already likes its post toggles to an unlike. Pure and
//! deterministic: the same spec gives the same ops.

use std::collections::HashSet;
use std::io::Write;

use crate::ops::{Kind, Op};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub ops: usize,
    pub posts: u64,
    pub users: u64,
    /// Zipf exponent of post popularity.
    pub zipf: f64,
    pub seed: u64,
}

/// xorshift64*: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranks 0..n with probability proportional to 1 / (rank + 1)^s, by
/// inverting the cumulative distribution.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n.max(1))
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        cumulative.iter_mut().for_each(|c| *c /= total);
        Zipf(cumulative)
    }

    fn rank(&self, u: f64) -> u64 {
        self.0.partition_point(|&c| c <= u).min(self.0.len() - 1) as u64
    }
}

/// The ops of `spec`, consistent per (post, user) by construction.
pub fn ops(spec: &Spec) -> Vec<Op> {
    let mut rng = Rng::new(spec.seed);
    let popularity = Zipf::new(spec.posts, spec.zipf);
    let mut liked: HashSet<(u64, u64)> = HashSet::new();
    (0..spec.ops)
        .map(|_| {
            let post = popularity.rank(rng.unit());
            let user = rng.next() % spec.users.max(1);
            let op = if liked.insert((post, user)) {
                Kind::Like
            } else {
                liked.remove(&(post, user));
                Kind::Unlike
            };
            Op {
                post: format!("p-{post}"),
                user: format!("u-{user}"),
                op,
            }
        })
        .collect()
}

/// Writes `ops` as NDJSON, one op a line.
pub fn write(ops: &[Op], mut out: impl Write) -> std::io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ops::parse;

    fn spec(ops: usize) -> Spec {
        Spec {
            ops,
            posts: 10_000,
            users: 50_000,
            zipf: 1.1,
            seed: 7,
        }
    }

    #[test]
    fn generated_ops_round_trip_and_are_consistent() {
        let ops = ops(&spec(20_000));
        let mut text = Vec::new();
        write(&ops, &mut text).unwrap();
        assert!(
            text.starts_with(b"{\"post\":\"p-"),
            "{}",
            String::from_utf8_lossy(&text[..60])
        );
        // parse checks that each pair alternates like/unlike.
        assert_eq!(parse(text.as_slice()).unwrap(), ops);
    }

    #[test]
    fn the_same_seed_gives_the_same_ops() {
        assert_eq!(ops(&spec(1_000)), ops(&spec(1_000)));
        assert_ne!(
            ops(&spec(1_000)),
            ops(&Spec {
                seed: 8,
                ..spec(1_000)
            })
        );
    }

    #[test]
    fn popularity_is_skewed_and_toggles_produce_unlikes() {
        let ops = ops(&spec(50_000));
        let mut per_post: BTreeMap<&str, usize> = BTreeMap::new();
        for op in &ops {
            *per_post.entry(&op.post).or_default() += 1;
        }
        let top = per_post["p-0"] as f64 / ops.len() as f64;
        // 1 / H(10000, 1.1) ≈ 0.15.
        assert!((0.13..0.17).contains(&top), "top post share {top}");
        assert!(per_post.len() > 2_000, "{} posts touched", per_post.len());
        let unlikes = ops.iter().filter(|op| op.op == Kind::Unlike).count();
        assert!(unlikes > 0 && unlikes < ops.len() / 2, "{unlikes} unlikes");
    }
}
