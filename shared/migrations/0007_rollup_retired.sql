-- Rollup ranges retired from reading (ADR 0006): those a newer base
-- supersedes, two bases back. Readers ignore a retired attempt at once;
-- its rows in `rollups` and `rollup_ranges` are deleted once it has been
-- retired for `projector.rollup_retired_keep_ms` (purged = 1 then; the
-- newest row of an attempt wins).
CREATE TABLE IF NOT EXISTS rollup_retired (
    attempt  UInt64,
    purged   UInt8,
    at_ms    UInt64
) ENGINE = ReplacingMergeTree(at_ms)
ORDER BY attempt;
