-- The read models on a ClickHouse cluster: the same tables as the
-- single-node migrations (0002, 0004 and 0006 are the current schema; 0001's
-- and 0003's tables are gone; 0005's rollup tables are not here yet, see
-- ADR 0006), replicated within each shard and read through
-- Distributed tables under the single-node names. Run it once instead of
-- the single-node migrations, with the cluster's name in place of `tally`
-- and the macros {shard} and {replica} defined on every server.
--
-- The fact tables are sharded by `seq`: every row of one event lands on one
-- shard, so a redelivered or replayed event's identical row meets the
-- first in the same ReplacingMergeTree and FINAL reads it once (ADR 0004).

CREATE TABLE IF NOT EXISTS engagements_local ON CLUSTER tally (
    tenant        String,
    seq           UInt64,
    occurred_at   DateTime,
    received_at   DateTime,
    type          String,
    platform      String,
    influencer_id String,
    post_id       String,
    campaign_id   String,
    user_id       String,
    likes         Int8,
    shares        UInt8,
    comments      UInt8,
    views         UInt64,
    clicks        UInt8,
    conversions   UInt8,
    value_e4      Int64,
    currency      String,
    follows       Int8,
    followers     Int64,
    sentiment     Int16,
    late          UInt8
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally/engagements', '{replica}')
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, post_id, seq);

CREATE TABLE IF NOT EXISTS engagements ON CLUSTER tally AS engagements_local
ENGINE = Distributed(tally, currentDatabase(), engagements_local, cityHash64(seq));

-- The facts again, sorted by sequence, for the rollups (migration 0006).
CREATE TABLE IF NOT EXISTS facts_by_seq_local ON CLUSTER tally (
    tenant        String,
    seq           UInt64,
    occurred_at   DateTime,
    platform      String,
    influencer_id String,
    post_id       String,
    campaign_id   String,
    likes         Int8,
    shares        UInt8,
    comments      UInt8,
    views         UInt64,
    clicks        UInt8,
    conversions   UInt8,
    follows       Int8,
    sentiment     Int16
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally/facts_by_seq', '{replica}')
PARTITION BY intDiv(seq, 16777216)
ORDER BY seq;

CREATE TABLE IF NOT EXISTS facts_by_seq ON CLUSTER tally AS facts_by_seq_local
ENGINE = Distributed(tally, currentDatabase(), facts_by_seq_local, cityHash64(seq));

CREATE TABLE IF NOT EXISTS catalogue_local ON CLUSTER tally (
    tenant        String,
    seq           UInt64,
    type          String,
    occurred_at   DateTime,
    influencer_id String,
    post_id       String,
    campaign_id   String,
    platform      String,
    handle        String,
    name          String,
    content_type  String,
    tags          Array(String),
    has_tags      UInt8,
    budget_e4     Int64,
    has_budget    UInt8,
    currency      String,
    starts_at     DateTime,
    ends_at       DateTime
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally/catalogue', '{replica}')
ORDER BY (tenant, seq);

CREATE TABLE IF NOT EXISTS catalogue ON CLUSTER tally AS catalogue_local
ENGINE = Distributed(tally, currentDatabase(), catalogue_local, cityHash64(seq));

CREATE TABLE IF NOT EXISTS late_events_local ON CLUSTER tally (
    tenant        String,
    seq           UInt64,
    event_id      String,
    type          String,
    post_id       String,
    occurred_at   DateTime,
    received_at   DateTime,
    bucket_end    DateTime,
    lateness_s    UInt32
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally/late_events', '{replica}')
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, seq);

CREATE TABLE IF NOT EXISTS late_events ON CLUSTER tally AS late_events_local
ENGINE = Distributed(tally, currentDatabase(), late_events_local, cityHash64(seq));

CREATE TABLE IF NOT EXISTS projection_positions_local ON CLUSTER tally (
    model       String,
    position    UInt64,
    stream_last UInt64,
    watermark   DateTime,
    updated_ms  UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally/projection_positions', '{replica}', updated_ms)
ORDER BY model;

CREATE TABLE IF NOT EXISTS projection_positions ON CLUSTER tally AS projection_positions_local
ENGINE = Distributed(tally, currentDatabase(), projection_positions_local, rand());

CREATE TABLE IF NOT EXISTS post_catalogue_local ON CLUSTER tally (
    tenant        String,
    seq           UInt64,
    type          String,
    occurred_at   DateTime,
    influencer_id String,
    post_id       String,
    campaign_id   String,
    platform      String,
    handle        String,
    name          String,
    content_type  String,
    tags          Array(String),
    has_tags      UInt8,
    budget_e4     Int64,
    has_budget    UInt8,
    currency      String,
    starts_at     DateTime,
    ends_at       DateTime
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally/post_catalogue', '{replica}')
ORDER BY (tenant, post_id, seq);

CREATE TABLE IF NOT EXISTS post_catalogue ON CLUSTER tally AS post_catalogue_local
ENGINE = Distributed(tally, currentDatabase(), post_catalogue_local, cityHash64(seq));

-- The services apply the single-node migrations at start-up unless they are
-- recorded as applied: record them (on the servers the services use).
CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER tally (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version;

INSERT INTO schema_migrations VALUES
    (1, 'events_and_post_metrics', now()),
    (2, 'read_models', now()),
    (3, 'drop_events_copy', now()),
    (4, 'post_catalogue', now()),
    (6, 'facts_by_seq', now());
