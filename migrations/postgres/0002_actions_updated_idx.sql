-- migrations/sqlite/0002_actions_updated_idx.sql, in step with it.
--
-- The audit's `since` (`audit --since`, `GET /api/actions?since=`, `sweep`'s report) keeps
-- the decisions made since then and the older ones whose action changed since then
-- (carried out, failed, re-armed). The first are found by decisions_at_idx; this index
-- finds the actions changed since then, so that neither half reads the whole audit log.
CREATE INDEX actions_updated_idx ON actions (updated_at);
