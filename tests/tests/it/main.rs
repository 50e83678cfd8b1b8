//! Every integration test, in one binary so the build links once.
//!
//! Each test starts its own `nats-server` and gets its own database in the
//! run's shared `clickhouse-server` (see the `tally-tests` harness), so the
//! tests run in parallel.

// Exactly once under SIGKILLs of projector processes and a ClickHouse outage.
mod faults;
// Dead letters: poison events leave the way after N attempts.
mod deadletters;
// The projector's consumer, shared or exclusive.
mod consumers;
// The whole path: HTTP → JetStream → projector → ClickHouse → query API.
mod e2e;
// Batches: JSON arrays and NDJSON, per-item results, limits.
mod batch;
// The command API against a real JetStream: acks, duplicates, sequences.
mod ingest;
// The like aggregate: idempotence and races across two instances.
mod likes;
// Hostile input: problem+json 4xx for every case, nothing stored.
mod hostile;
// Prometheus metrics of the command API.
mod metrics;
// A nats-server restart during steady ingest.
mod outage;
// Rate limits: per tenant and per token, one unit per event.
mod ratelimit;
// Webhooks: Meta and generic signed JSON, per-tenant secrets.
mod webhooks;
// Schema migrations against a real ClickHouse.
mod migrations;
// docker-compose.yml is valid.
mod compose;
// Every read model against values worked out by hand.
mod read_models;
// The replay tooling's stream reader when the client drops messages.
mod reader;
// Rankings from rollups equal rankings from the facts at every position.
mod rollups;
// A batch's write: every table at once, all or retried.
mod writes;
// The query API's reports over HTTP on the same dataset.
mod reports;
// Reports on one influencer or campaign: narrowed, then attributed.
mod narrowed;
// The query API without ClickHouse: stale cached answers, prompt 503s.
mod degraded;
// Live counters over Server-Sent Events.
mod live;
// The OpenAPI document, and schemathesis against both APIs.
mod openapi;
// Replay tooling: verify, rebuild, snapshots, dead letters, export/import.
mod replay;
// What the durability tests share.
mod durability;
// SIGTERM to service processes during load: nothing acknowledged is lost.
mod shutdown;
// A three-node NATS cluster losing a node during ingest.
mod cluster;
// Trace export over OTLP/HTTP, from the HTTP request to the projector.
mod traces;
// The dashboard and the like-button demo in headless Chromium.
mod browser;
// The benchmark harness's reading of ClickHouse's part log.
mod bench_harness;
