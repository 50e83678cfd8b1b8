-- The late events again, partitioned by stream sequence (a million
-- sequences each) instead of by the month they were received in.
--
-- Each projector batch inserts its few late events as one small part, and
-- ClickHouse merges a partition that is small (a few MB) whole, new parts
-- into the one large part, almost once per insert: with a month's
-- partition of 110,000 late events, merging them took more of ClickHouse's
-- time under single events than merging the facts (12.3 s in a 32 s
-- benchmark phase, against 6.8 s for `engagements`). A partition of a
-- million sequences holds about 20,000 late events at 2%, and once the
-- stream has moved past it, it is merged for the last time. Readers
-- select late events by tenant and sequence, so a partition by sequence
-- also lets them skip the ranges they do not ask for.
--
-- A partition key cannot be changed in place, and a `RENAME` would race a
-- projector that started writing meanwhile, so the table takes a new
-- name. Stop workers of earlier versions before this runs: they write to
-- `late_events`, which is dropped, so their writes fail and their events
-- are redelivered to the new workers. Run twice (two projectors starting
-- together), the copy can repeat, which readers take once (FINAL).
CREATE TABLE IF NOT EXISTS late_events_by_seq (
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
PARTITION BY intDiv(seq, 1048576)
ORDER BY (tenant, seq);

INSERT INTO late_events_by_seq
SELECT tenant, seq, event_id, type, post_id, occurred_at, received_at, bucket_end, lateness_s
FROM late_events;

DROP TABLE IF EXISTS late_events;
