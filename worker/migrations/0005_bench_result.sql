-- nexingest schema, version 5: figures of `nexingest bench` against this database, which
-- `doctor` uses for its size and time estimates (the latest row). `bench` loads into a scratch
-- schema of its own and writes only this one row here.
CREATE TABLE bench_result (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    measured_at        timestamptz NOT NULL DEFAULT now(),
    dataset            text NOT NULL,
    variables          text[] NOT NULL,
    -- Data cells (rows) each job loaded, and how many jobs ran at once.
    cells_per_job      bigint NOT NULL,
    concurrent_jobs    integer NOT NULL,
    rows_loaded        bigint NOT NULL,
    wall_seconds       double precision NOT NULL,
    -- Aggregate over the concurrent jobs.
    rows_per_second    double precision NOT NULL,
    -- `pg_total_relation_size` of `climate_data_year` (table, TOAST, indexes) / rows.
    bytes_per_row      double precision NOT NULL,
    -- `pg_wal_lsn_diff` over the jobs / rows (includes other activity on the server meanwhile).
    wal_bytes_per_row  double precision NOT NULL,
    -- The whole `bench --json` report.
    report             jsonb NOT NULL
);
