//! The peer benchmark: the same like-counting workload against the design
//! the seed articles sketch (a Redis counter per post) and an event-sourcing
//! framework (cqrs-es over postgres-es), so Tally's figures can be given as
//! ratios to them.
//!
//! Codemap: `ops` reads, checks and splits the workload; `drive` runs one
//! peer through it; `redis_peer` and `cqrs_peer` (with the `post`
//! aggregate) are the peers; `stats` turns timings into the report;
//! `generate` makes a sample workload.

pub mod cqrs_peer;
pub mod drive;
pub mod generate;
pub mod ops;
pub mod post;
pub mod redis_peer;
pub mod stats;
