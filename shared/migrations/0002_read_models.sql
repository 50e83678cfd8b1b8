-- The read models' facts (ADR 0004). Every table is keyed by the event's
-- stream sequence, so a redelivered, replayed or concurrently projected
-- event rewrites an identical row that ReplacingMergeTree keeps once; every
-- aggregate (post metrics, influencer buckets, followers, campaigns,
-- rankings, anomalies) is computed from them with FINAL.

-- Each interaction or audience event's contribution, as sent (attribution
-- that the event lacks comes from `catalogue` when it is read, so a
-- catalogue event that arrives late still attributes it).
CREATE TABLE IF NOT EXISTS engagements (
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
    -- Conversion value in ten-thousandths of `currency`: integer sums are exact.
    value_e4      Int64,
    currency      String,
    -- +1 follow, -1 unfollow.
    follows       Int8,
    -- A follower_snapshot's count; -1 on every other event.
    followers     Int64,
    -- Comment sentiment from -1000 (negative) to 1000 (positive).
    sentiment     Int16,
    -- Received after its minute bucket closed (bucket end + grace).
    late          UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, post_id, seq);

-- Catalogue events (influencers, posts, campaigns), one row each. The
-- current state of an entity is the latest value of each field that its
-- events carried (has_* marks a field that was present).
CREATE TABLE IF NOT EXISTS catalogue (
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
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant, seq);

-- Events received after their bucket closed: counted like any other, and
-- listed here per tenant.
CREATE TABLE IF NOT EXISTS late_events (
    tenant        String,
    seq           UInt64,
    event_id      String,
    type          String,
    post_id       String,
    occurred_at   DateTime,
    received_at   DateTime,
    bucket_end    DateTime,
    lateness_s    UInt32
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, seq);

-- The stream position each read model reflects (every event at or below
-- it is projected), the stream's end and the event-time watermark, written
-- by the projector workers about once a second.
CREATE TABLE IF NOT EXISTS projection_positions (
    model       String,
    position    UInt64,
    stream_last UInt64,
    watermark   DateTime,
    updated_ms  UInt64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY model;

-- Replaced by engagements.
DROP TABLE IF EXISTS post_metrics;
