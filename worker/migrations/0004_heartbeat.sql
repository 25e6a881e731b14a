-- nexingest schema, version 4: when a running attempt's worker last showed it was alive.
-- Set when an attempt starts and on each successful visibility extension (`run`) or every
-- 30 s (`ingest`); `jobs`/`requeue` show a `running` data source as `stale` once it is older
-- than `--stale-after`.
ALTER TABLE data_source ADD COLUMN heartbeat_at timestamptz;
