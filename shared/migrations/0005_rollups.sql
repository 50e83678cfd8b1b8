-- Rollups (ADR 0006): the facts of closed ranges of stream sequences,
-- summed per tenant, minute and attribution, so that a ranking reads a few
-- rows per influencer instead of every fact with FINAL and a join.
--
-- A range (lo, hi] is rolled once every event up to hi is projected, with
-- the catalogue as it stood at hi, plus the corrections that catalogue
-- events in the range make to earlier facts' attribution. Rolling is a pure
-- function of the facts, so an attempt that is repeated (a crash, two
-- workers) writes the same sums. Each attempt writes under its own random
-- `attempt` and is used only once `rollup_ranges` records it done; any one
-- done attempt of a range is as good as another.
CREATE TABLE IF NOT EXISTS rollups (
    tenant        String,
    -- 0: summed from facts; n: summed from 16 consecutive ranges of level n-1.
    level         UInt8,
    lo            UInt64,
    hi            UInt64,
    attempt       UInt64,
    minute        DateTime,
    influencer    String,
    campaign      String,
    platform      String,
    content_type  String,
    tags          Array(String),
    likes         Int64,
    shares        Int64,
    comments      Int64,
    views         Int64,
    clicks        Int64,
    conversions   Int64,
    follows       Int64,
    sentiment     Int64,
    events        Int64
) ENGINE = MergeTree()
ORDER BY (tenant, attempt, minute);

-- The ranges rolled to the end, one row per finished attempt.
CREATE TABLE IF NOT EXISTS rollup_ranges (
    level    UInt8,
    lo       UInt64,
    hi       UInt64,
    attempt  UInt64,
    done_ms  UInt64
) ENGINE = MergeTree()
ORDER BY (level, lo, hi);

-- Whether rolling is held (the newest row wins). A rebuild holds it in the
-- rebuilt tables until its last pass has folded the events of the switch,
-- so no range is rolled over facts that are still missing.
CREATE TABLE IF NOT EXISTS rollup_hold (
    held   UInt8,
    at_ms  UInt64
) ENGINE = ReplacingMergeTree(at_ms)
ORDER BY tuple();
