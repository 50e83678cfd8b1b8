-- The `events` table copied every event (payload included) beside the read
-- models' facts, which doubled the projector's write volume and was read by
-- nothing: the stream is the history, and `engagements`, `catalogue` and
-- `late_events` hold everything the read models need (ADR 0004).
DROP TABLE IF EXISTS events;
