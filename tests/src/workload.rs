//! A realistic engagement workload for the benchmarks: several tenants;
//! posts and influencers whose popularity follows a Zipf law (a few viral
//! posts take most of the traffic); the v1 event mix (views dominate, then
//! likes, comments with text, shares, clicks, conversions, follows, and the
//! catalogue events that publish posts); a share of duplicates (an event
//! sent again with the same id) and of late events (older than their
//! bucket's grace); like/unlike toggles from many users.
//!
//! Pure and deterministic: the same seed gives the same events, whoever
//! generates them.

use serde_json::{json, Value};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub seed: u64,
    pub tenants: usize,
    /// Posts per tenant.
    pub posts: u64,
    /// Influencers per tenant (posts are spread over them).
    pub influencers: u64,
    /// Zipf exponent of post popularity (1.0–1.2 is typical of social
    /// media).
    pub zipf: f64,
    /// Distinct users.
    pub users: u64,
    /// Share of events that are a repeat of an earlier event (same id).
    pub duplicates: f64,
    /// Share of events older than their bucket's end plus the grace.
    pub late: f64,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            seed: 1,
            tenants: 3,
            posts: 10_000,
            influencers: 500,
            zipf: 1.1,
            users: 100_000,
            duplicates: 0.05,
            late: 0.02,
        }
    }
}

/// One event to send: its tenant and its v1 envelope (`occurred_at` as
/// seconds before now, for the sender to turn into a time).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub tenant: String,
    pub envelope: Value,
    pub age_seconds: u64,
    /// A repeat of an earlier event (same tenant and id).
    pub duplicate: bool,
}

/// xorshift64*: deterministic and cheap.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Ranks 0..n drawn with probability proportional to 1 / (rank + 1)^s, by
/// inverting the cumulative distribution (a table of n floats).
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Zipf { cumulative }
    }

    /// The rank for a uniform draw `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1) as u64
    }
}

/// The v1 mix, in percent: views dominate.
const MIX: [(&str, u64); 8] = [
    ("view", 55),
    ("like", 20),
    ("unlike", 3),
    ("comment", 8),
    ("share", 5),
    ("click", 5),
    ("conversion", 1),
    ("follow", 3),
];

const COMMENTS: [&str; 4] = [
    "love this, so good",
    "not my style",
    "where can I buy it?",
    "amazing colours 😍",
];

/// Generates events per `spec`, endlessly: first each tenant's catalogue
/// (one `post_published` per post), then interactions.
pub struct Workload {
    spec: Spec,
    rng: Rng,
    popularity: Zipf,
    catalogue: u64,
    sent: u64,
    recent: Vec<(String, Value, u64)>,
}

impl Workload {
    pub fn new(spec: Spec) -> Workload {
        Workload {
            rng: Rng(spec.seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            popularity: Zipf::new(spec.posts, spec.zipf),
            catalogue: 0,
            sent: 0,
            recent: Vec::new(),
            spec,
        }
    }

    fn tenant(&self, i: usize) -> String {
        format!("bench-{i}")
    }

    fn influencer_of(&self, post: u64) -> String {
        format!("inf-{}", post % self.spec.influencers.max(1))
    }
}

impl Iterator for Workload {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        let tenants = self.spec.tenants.max(1) as u64;
        if self.catalogue < self.spec.posts * tenants {
            let (tenant, post) = (self.catalogue % tenants, self.catalogue / tenants);
            self.catalogue += 1;
            let envelope = json!({
                "event_id": format!("pub-{post}"), "type": "post_published",
                "platform": "instagram", "post_id": format!("post-{post}"),
                "influencer_id": self.influencer_of(post),
                "campaign_id": format!("camp-{}", post % 20),
                "payload": {"content_type": "reel", "tags": ["launch"]},
            });
            return Some(Generated {
                tenant: self.tenant(tenant as usize),
                envelope,
                age_seconds: 3_600,
                duplicate: false,
            });
        }
        if !self.recent.is_empty() && self.rng.unit() < self.spec.duplicates {
            let (tenant, envelope, age) =
                self.recent[self.rng.below(self.recent.len() as u64) as usize].clone();
            return Some(Generated {
                tenant,
                envelope,
                age_seconds: age,
                duplicate: true,
            });
        }
        self.sent += 1;
        let which = self.rng.below(tenants) as usize;
        let tenant = self.tenant(which);
        let post = self.popularity.rank(self.rng.unit());
        let user = format!("u{}", self.rng.below(self.spec.users));
        let mut pick = self.rng.below(100);
        let kind = MIX
            .iter()
            .find(|(_, share)| {
                let hit = pick < *share;
                pick = pick.saturating_sub(*share);
                hit
            })
            .map_or("view", |(kind, _)| kind);
        let payload = match kind {
            "view" => json!({"count": 1 + self.rng.below(3)}),
            "comment" => json!({"text": COMMENTS[self.rng.below(4) as usize]}),
            "conversion" => json!({"value": 19.99, "currency": "EUR"}),
            _ => json!({}),
        };
        let mut envelope = json!({
            "event_id": format!("e-{}", self.sent), "type": kind,
            "post_id": format!("post-{post}"), "user_id": user, "payload": payload,
        });
        if kind == "follow" {
            envelope["influencer_id"] = json!(self.influencer_of(post));
            envelope.as_object_mut().unwrap().remove("post_id");
        }
        // Late: minutes to an hour old, past any minute bucket's grace.
        let age = if self.rng.unit() < self.spec.late {
            300 + self.rng.below(3_300)
        } else {
            self.rng.below(5)
        };
        if self.recent.len() < 1_000 {
            self.recent.push((tenant.clone(), envelope.clone(), age));
        } else {
            let slot = self.rng.below(1_000) as usize;
            self.recent[slot] = (tenant.clone(), envelope.clone(), age);
        }
        Some(Generated {
            tenant,
            envelope,
            age_seconds: age,
            duplicate: false,
        })
    }
}

/// One like-button operation: `user` likes or unlikes `post`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikeOp {
    pub post: String,
    pub user: String,
    pub like: bool,
}

impl LikeOp {
    /// The line of the peers' NDJSON input (`bench/peers`).
    pub fn to_json(&self) -> Value {
        json!({"post": self.post, "user": self.user,
               "op": if self.like { "like" } else { "unlike" }})
    }
}

/// Like/unlike toggles from many users on Zipf-popular posts: each
/// operation flips the user's like of the post, so an unlike always follows
/// a like of the same pair, as a like button sends them.
pub struct LikeToggles {
    rng: Rng,
    popularity: Zipf,
    users: u64,
    liked: std::collections::HashSet<(u64, u64)>,
}

impl LikeToggles {
    pub fn new(seed: u64, posts: u64, users: u64, zipf: f64) -> LikeToggles {
        LikeToggles {
            rng: Rng(seed.max(1).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1),
            popularity: Zipf::new(posts, zipf),
            users,
            liked: Default::default(),
        }
    }
}

impl Iterator for LikeToggles {
    type Item = LikeOp;

    fn next(&mut self) -> Option<LikeOp> {
        let post = self.popularity.rank(self.rng.unit());
        let user = self.rng.below(self.users);
        let like = self.liked.insert((post, user));
        if !like {
            self.liked.remove(&(post, user));
        }
        Some(LikeOp {
            post: format!("post-{post}"),
            user: format!("u{user}"),
            like,
        })
    }
}

/// The likes each post has after `ops`.
pub fn expected_likes(ops: &[LikeOp]) -> std::collections::HashMap<&str, i64> {
    let mut counts = std::collections::HashMap::new();
    for op in ops {
        *counts.entry(op.post.as_str()).or_default() += if op.like { 1 } else { -1 };
    }
    counts
}

/// Which of `clients` sends `user`'s operations: all of one user's go to
/// one client, in order.
pub fn client_of(user: &str, clients: usize) -> usize {
    // FNV-1a: stable across runs and builds.
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % clients.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn interactions(spec: Spec, n: usize) -> Vec<Generated> {
        let catalogue = (spec.posts * spec.tenants as u64) as usize;
        Workload::new(spec).skip(catalogue).take(n).collect()
    }

    #[test]
    fn the_catalogue_comes_first_one_post_published_per_post_and_tenant() {
        let spec = Spec {
            posts: 10,
            tenants: 2,
            ..Spec::default()
        };
        let first: Vec<Generated> = Workload::new(spec).take(20).collect();
        assert!(first.iter().all(|g| g.envelope["type"] == "post_published"));
        let distinct: HashSet<(String, String)> = first
            .iter()
            .map(|g| (g.tenant.clone(), g.envelope["post_id"].to_string()))
            .collect();
        assert_eq!(distinct.len(), 20);
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let a = interactions(Spec::default(), 500);
        let b = interactions(Spec::default(), 500);
        assert_eq!(a, b);
        let other = interactions(
            Spec {
                seed: 2,
                ..Spec::default()
            },
            500,
        );
        assert_ne!(a, other);
    }

    #[test]
    fn the_mix_duplicates_and_late_events_are_as_specified() {
        let events = interactions(Spec::default(), 100_000);
        let count = |f: &dyn Fn(&Generated) -> bool| events.iter().filter(|g| f(g)).count() as f64;
        let share = |f: &dyn Fn(&Generated) -> bool| count(f) / events.len() as f64;
        let duplicates = share(&|g| g.duplicate);
        assert!(
            (0.04..0.06).contains(&duplicates),
            "duplicates {duplicates}"
        );
        let fresh: Vec<&Generated> = events.iter().filter(|g| !g.duplicate).collect();
        let of_fresh = |f: &dyn Fn(&Generated) -> bool| {
            fresh.iter().filter(|g| f(g)).count() as f64 / fresh.len() as f64
        };
        let late = of_fresh(&|g| g.age_seconds >= 300);
        assert!((0.015..0.025).contains(&late), "late {late}");
        let kind = |k: &'static str| of_fresh(&move |g: &Generated| g.envelope["type"] == k);
        assert!(
            (0.53..0.57).contains(&kind("view")),
            "views {}",
            kind("view")
        );
        assert!(kind("view") > kind("like") && kind("like") > kind("comment"));
        assert!(kind("comment") > kind("conversion") && kind("conversion") > 0.0);
        assert!(kind("unlike") > 0.0 && kind("follow") > 0.0);
        // Duplicates repeat an earlier event exactly.
        let originals: HashSet<String> = fresh.iter().map(|g| g.envelope.to_string()).collect();
        assert!(events
            .iter()
            .filter(|g| g.duplicate)
            .all(|g| originals.contains(&g.envelope.to_string())));
    }

    #[test]
    fn a_few_posts_take_most_of_the_traffic() {
        let events = interactions(Spec::default(), 100_000);
        let mut per_post: HashMap<String, u64> = HashMap::new();
        for g in &events {
            if let Some(post) = g.envelope["post_id"].as_str() {
                *per_post.entry(post.to_owned()).or_default() += 1;
            }
        }
        let mut counts: Vec<u64> = per_post.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = counts.iter().sum();
        let top_1_percent: u64 = counts.iter().take(100).sum();
        assert!(
            top_1_percent as f64 / total as f64 > 0.4,
            "the top 1% of posts took {top_1_percent} of {total}"
        );
    }

    #[test]
    fn zipf_ranks_follow_the_law() {
        let zipf = Zipf::new(1_000, 1.0);
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999_9), 999);
        // P(rank 0) = 1 / H(1000) ≈ 0.1336; P(rank 1) is half of it.
        let mut rng = Rng(7);
        let draws: Vec<u64> = (0..200_000).map(|_| zipf.rank(rng.unit())).collect();
        let share = |r: u64| draws.iter().filter(|&&d| d == r).count() as f64 / draws.len() as f64;
        assert!((0.128..0.139).contains(&share(0)), "{}", share(0));
        assert!(
            (share(0) / share(1) - 2.0).abs() < 0.1,
            "{} {}",
            share(0),
            share(1)
        );
    }

    #[test]
    fn every_event_is_a_valid_v1_event() {
        let now = time::OffsetDateTime::now_utc();
        for g in Workload::new(Spec {
            posts: 50,
            ..Spec::default()
        })
        .take(5_000)
        {
            let mut envelope = g.envelope.clone();
            let at = now - time::Duration::seconds(g.age_seconds as i64);
            envelope["occurred_at"] = json!(at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap());
            let checked = tally_shared::event::validate(
                &envelope,
                now,
                &tally_shared::event::Limits::default(),
            );
            assert!(checked.is_ok(), "{envelope}: {checked:?}");
        }
    }

    #[test]
    fn like_toggles_alternate_per_user_and_post() {
        let ops: Vec<LikeOp> = LikeToggles::new(3, 50, 20, 1.1).take(5_000).collect();
        let mut state: HashMap<(&str, &str), bool> = HashMap::new();
        for op in &ops {
            let liked = state.entry((&op.post, &op.user)).or_default();
            assert_ne!(*liked, op.like, "{op:?} repeats the pair's last operation");
            *liked = op.like;
        }
        assert!(ops.iter().any(|op| !op.like));
        // The expected counts are the pairs left liked.
        let expected = expected_likes(&ops);
        for (post, count) in &expected {
            let liked = state
                .iter()
                .filter(|((p, _), liked)| p == post && **liked)
                .count() as i64;
            assert_eq!(*count, liked, "{post}");
        }
        assert_eq!(ops[0].to_json()["op"], "like");
    }

    #[test]
    fn one_client_sends_all_of_a_users_operations() {
        assert_eq!(client_of("u1", 8), client_of("u1", 8));
        assert!(client_of("u1", 1) == 0 && client_of("", 3) < 3);
        let spread: HashSet<usize> = (0..1_000).map(|u| client_of(&format!("u{u}"), 8)).collect();
        assert_eq!(spread.len(), 8);
    }

    #[test]
    fn many_users_like_and_unlike() {
        let events = interactions(Spec::default(), 50_000);
        let likers: HashSet<&str> = events
            .iter()
            .filter(|g| g.envelope["type"] == "like" || g.envelope["type"] == "unlike")
            .filter_map(|g| g.envelope["user_id"].as_str())
            .collect();
        assert!(likers.len() > 5_000, "{}", likers.len());
    }
}
