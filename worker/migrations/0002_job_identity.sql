-- nexingest schema, version 2: the job model (DESIGN §1, §3, §5).
-- A data source accumulates jobs (location sets, variables); the ledger records each job
-- attempt with its identity (variables + location-source key) so a delivery of a job that is
-- already done is recognised and dropped, while another job on the same data source runs.

ALTER TABLE job_ledger
    ADD COLUMN variables     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN location_key  text,
    ADD COLUMN attempt       integer,
    ADD COLUMN rows_updated  bigint NOT NULL DEFAULT 0,
    ADD COLUMN update_existing boolean NOT NULL DEFAULT false;
ALTER TABLE job_ledger ALTER COLUMN finished_at SET DEFAULT clock_timestamp();
ALTER TABLE job_ledger DROP CONSTRAINT job_ledger_outcome_check;
ALTER TABLE job_ledger ADD CONSTRAINT job_ledger_outcome_check
    CHECK (outcome IN ('done', 'failed', 'released', 'skipped'));
-- Identity look-ups: is (data source, variables, location key) done?
CREATE INDEX job_ledger_identity_idx ON job_ledger (data_source_id, location_key)
    WHERE outcome = 'done';
-- Rows written before this version carry no identity; `all`-location loads are the only kind
-- whose key is known without re-reading its source.
UPDATE job_ledger l SET location_key = 'all', variables = s.variables
FROM data_source s
WHERE l.data_source_id = s.id AND l.outcome = 'done' AND s.location_source = 'all';
