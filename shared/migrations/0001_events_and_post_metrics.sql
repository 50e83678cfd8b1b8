-- Every projected event, one row per stream sequence. Redelivered events
-- write the same (tenant, seq) row again; ReplacingMergeTree keeps one, and
-- readers that need exact answers read with FINAL.
CREATE TABLE IF NOT EXISTS events (
    tenant         String,
    seq            UInt64,
    event_id       String,
    type           String,
    occurred_at    DateTime,
    received_at    DateTime,
    platform       String,
    influencer_id  String,
    post_id        String,
    campaign_id    String,
    user_id        String,
    payload        String,
    schema_version UInt16
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, seq);

-- Post metrics read model: each event's contribution to its post, keyed by
-- stream sequence so that a redelivery replaces rather than adds.
CREATE TABLE IF NOT EXISTS post_metrics (
    tenant      String,
    post_id     String,
    seq         UInt64,
    occurred_at DateTime,
    likes       Int8,
    shares      UInt8,
    comments    UInt8,
    views       UInt64,
    clicks      UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, post_id, seq);
