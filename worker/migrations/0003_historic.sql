-- nexingest schema, version 3: derived historic data (`nexingest derive-historic`).
-- Per dataset, over the `historical` scenario: a 366-slot average year per cell and period
-- (slot = calendar date on a leap-year axis), and percentile baselines per cell, period and
-- percentile. Each (dataset, period) is replaced as a whole in one transaction.

-- 30-year windows (or any explicitly requested range of years).
CREATE TABLE historic_period (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    start_year integer NOT NULL,
    end_year   integer NOT NULL,
    UNIQUE (start_year, end_year),
    CHECK (start_year <= end_year)
);

-- Per (dataset, period, cell), for each variable: 366 slots, slot = (month, day) on a leap-year
-- axis (Feb 29 = slot 60, 1-based), the mean of every non-null value of that date over every
-- model and year of the period; NULL where no value exists. The key leads with (dataset,
-- period) so a re-run deletes its predecessor's rows through the primary key, and rows written
-- in cell order append to the index.
CREATE TABLE historic_average_year (
    dataset_id  integer NOT NULL REFERENCES dataset (id),
    period_id   integer NOT NULL REFERENCES historic_period (id),
    map_cell_id bigint NOT NULL,
    tasmin      real[],
    tasmax      real[],
    pr          real[],
    tas         real[],
    hurs        real[],
    huss        real[],
    rlds        real[],
    rsds        real[],
    sfcwind     real[],
    PRIMARY KEY (dataset_id, period_id, map_cell_id)
);
-- ~1.5 KB per array: out of line, uncompressed (as climate_data_year).
ALTER TABLE historic_average_year
    ALTER COLUMN tasmin  SET STORAGE EXTERNAL,
    ALTER COLUMN tasmax  SET STORAGE EXTERNAL,
    ALTER COLUMN pr      SET STORAGE EXTERNAL,
    ALTER COLUMN tas     SET STORAGE EXTERNAL,
    ALTER COLUMN hurs    SET STORAGE EXTERNAL,
    ALTER COLUMN huss    SET STORAGE EXTERNAL,
    ALTER COLUMN rlds    SET STORAGE EXTERNAL,
    ALTER COLUMN rsds    SET STORAGE EXTERNAL,
    ALTER COLUMN sfcwind SET STORAGE EXTERNAL;

-- Per (dataset, period, cell, percentile), for each variable: the mean over the models of each
-- model's percentile of its daily values over the period (pr: wet days, pr > 0, only), linear
-- interpolation between order statistics (PostgreSQL's percentile_cont). Models lacking a year
-- of the period for the cell are left out; NULL where no model has a value.
CREATE TABLE climate_baseline (
    dataset_id  integer NOT NULL REFERENCES dataset (id),
    period_id   integer NOT NULL REFERENCES historic_period (id),
    map_cell_id bigint NOT NULL,
    percentile  integer NOT NULL CHECK (percentile BETWEEN 0 AND 100),
    tasmin      real,
    tasmax      real,
    pr          real,
    tas         real,
    hurs        real,
    huss        real,
    rlds        real,
    rsds        real,
    sfcwind     real,
    PRIMARY KEY (dataset_id, period_id, map_cell_id, percentile)
);
