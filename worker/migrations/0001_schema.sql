-- nexingest schema, version 1 (DESIGN §3).
-- Runs inside one transaction with `search_path` set to the target schema only, so every name
-- below lands in that schema. Ids are integer/bigint identities, never smallint.

CREATE TABLE dataset (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT ''
);

CREATE TABLE climate_model (
    id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE scenario (
    id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- Which models a dataset holds (ensemble member used for the files).
CREATE TABLE dataset_model (
    dataset_id integer NOT NULL REFERENCES dataset (id),
    model_id   integer NOT NULL REFERENCES climate_model (id),
    PRIMARY KEY (dataset_id, model_id)
);

-- Which scenarios a dataset holds and their year range (inclusive).
CREATE TABLE dataset_scenario (
    dataset_id  integer NOT NULL REFERENCES dataset (id),
    scenario_id integer NOT NULL REFERENCES scenario (id),
    first_year  integer NOT NULL,
    last_year   integer NOT NULL,
    PRIMARY KEY (dataset_id, scenario_id),
    CHECK (first_year <= last_year)
);

-- One per job (dataset, model, scenario, year) with the job's state.
CREATE TABLE data_source (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id       integer NOT NULL REFERENCES dataset (id),
    model_id         integer NOT NULL REFERENCES climate_model (id),
    scenario_id      integer NOT NULL REFERENCES scenario (id),
    year             integer NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    rows_written     bigint NOT NULL DEFAULT 0,
    variables        text[] NOT NULL DEFAULT '{}',
    location_source  text,
    bytes_downloaded bigint,
    download_ms      bigint,
    decode_ms        bigint,
    load_ms          bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    last_error       text,
    UNIQUE (dataset_id, model_id, scenario_id, year)
);
CREATE INDEX data_source_state_idx ON data_source (state);

-- Units and calendar of each variable a job loaded.
CREATE TABLE data_source_variable (
    data_source_id bigint NOT NULL REFERENCES data_source (id) ON DELETE CASCADE,
    variable       text NOT NULL,
    units          text NOT NULL,
    calendar       text NOT NULL,
    source         text NOT NULL,
    PRIMARY KEY (data_source_id, variable)
);

-- One entry per job attempt that reached an outcome (done/failed/skipped).
-- A `done` entry commits in the same transaction as the job's rows.
CREATE TABLE job_ledger (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_source_id bigint NOT NULL REFERENCES data_source (id) ON DELETE CASCADE,
    message_id     text,
    receive_count  integer,
    worker         text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('done', 'failed', 'skipped')),
    rows_written   bigint NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL DEFAULT now(),
    error          text
);
CREATE INDEX job_ledger_data_source_idx ON job_ledger (data_source_id);

CREATE TABLE map_cell (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id integer NOT NULL REFERENCES dataset (id),
    lat        double precision NOT NULL,
    lon        double precision NOT NULL,
    UNIQUE (dataset_id, lat, lon)
);

CREATE TABLE location (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,
    external_id text NOT NULL,
    name        text NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 360),
    properties  jsonb NOT NULL DEFAULT '{}',
    UNIQUE (source, external_id)
);

-- Nearest data cell of a location per dataset; map_cell_id NULL = unmatched (reported, kept).
CREATE TABLE location_cell (
    location_id bigint NOT NULL REFERENCES location (id) ON DELETE CASCADE,
    dataset_id  integer NOT NULL REFERENCES dataset (id),
    map_cell_id bigint REFERENCES map_cell (id),
    distance_km real,
    PRIMARY KEY (location_id, dataset_id)
);

-- One row per (cell, data source), one daily real[] per variable (365 or 366 slots, NULL =
-- missing). No foreign keys here on purpose: RI triggers fire per row and would slow COPY;
-- the worker is the only writer and takes ids from data_source/map_cell.
CREATE TABLE climate_data_year (
    data_source_id bigint NOT NULL,
    map_cell_id    bigint NOT NULL,
    tasmin         real[],
    tasmax         real[],
    pr             real[],
    tas            real[],
    hurs           real[],
    huss           real[],
    rlds           real[],
    rsds           real[],
    sfcwind        real[],
    PRIMARY KEY (data_source_id, map_cell_id)
);
-- ~1.5 KB per array, rows above the TOAST threshold; float arrays barely compress and pglz
-- would cost ~45% of COPY time: store out of line, uncompressed.
ALTER TABLE climate_data_year
    ALTER COLUMN tasmin  SET STORAGE EXTERNAL,
    ALTER COLUMN tasmax  SET STORAGE EXTERNAL,
    ALTER COLUMN pr      SET STORAGE EXTERNAL,
    ALTER COLUMN tas     SET STORAGE EXTERNAL,
    ALTER COLUMN hurs    SET STORAGE EXTERNAL,
    ALTER COLUMN huss    SET STORAGE EXTERNAL,
    ALTER COLUMN rlds    SET STORAGE EXTERNAL,
    ALTER COLUMN rsds    SET STORAGE EXTERNAL,
    ALTER COLUMN sfcwind SET STORAGE EXTERNAL;
CREATE INDEX climate_data_year_map_cell_idx ON climate_data_year (map_cell_id);
