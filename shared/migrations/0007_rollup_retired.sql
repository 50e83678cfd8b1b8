-- Rollup attempts retired from reading (ADR 0006): ranges that newer joins
-- supersede, and attempts never recorded done. Readers ignore a listed
-- attempt at once; its rows in `rollups` and `rollup_ranges` are deleted
-- once it has been retired for `projector.rollup_retired_keep_ms`. The
-- newest row of an attempt wins; `purged`: 0 retired, 1 deleted (struck
-- from this table once its rows are gone), 2 retired and never recorded,
-- 3 deleted and never recorded (kept listed).
CREATE TABLE IF NOT EXISTS rollup_retired (
    attempt  UInt64,
    purged   UInt8,
    at_ms    UInt64
) ENGINE = ReplacingMergeTree(at_ms)
ORDER BY attempt;
