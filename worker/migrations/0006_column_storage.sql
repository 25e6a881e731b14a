-- nexingest schema, version 5: array storage chosen per variable (issue 11 §2; figures and the
-- reasoning in the README, "Array storage per variable").
-- Daily precipitation is 0 on most days (real NEX-GDDP-CMIP6 pr: ~70 % of days; CanESM5 prsn:
-- ~64 %), so lz4 stores its arrays in ~0.4 of their size and keeps them inline in the heap;
-- the other variables (temperatures, humidity, radiation, wind) are continuous floats that lz4
-- cannot shrink, so they stay out of line and uncompressed (EXTERNAL, as in version 1).
-- ALTER … SET STORAGE / SET COMPRESSION apply to rows written from now on: rows already in the
-- table keep the storage they were written with (a VACUUM FULL or a reload rewrites them).
-- lz4 needs PostgreSQL 14 or newer built with lz4 (`--with-lz4`: Debian/Ubuntu packages, RDS,
-- Aurora, Cloud SQL, Azure): a server without it stops this migration with a clear error, in a
-- DO block so that PostgreSQL 13 fails here too and not on the SET COMPRESSION syntax.
DO $$
BEGIN
    IF current_setting('server_version_num')::int < 140000 THEN
        RAISE EXCEPTION 'nexingest schema version 6 stores pr with lz4 compression, which needs PostgreSQL 14 or newer; this server is PostgreSQL %',
            current_setting('server_version')
            USING HINT = 'Upgrade the server to PostgreSQL 14 or newer (built with lz4), then run `nexingest migrate` again.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_settings
                   WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        RAISE EXCEPTION 'nexingest schema version 6 stores pr with lz4 compression, but this PostgreSQL % was built without lz4 (default_toast_compression accepts only pglz)',
            current_setting('server_version')
            USING HINT = 'Use a PostgreSQL server built with lz4 (configure --with-lz4; the Debian, Ubuntu and RDS builds are), then run `nexingest migrate` again.';
    END IF;
    EXECUTE 'ALTER TABLE climate_data_year
                 ALTER COLUMN pr SET STORAGE EXTENDED,
                 ALTER COLUMN pr SET COMPRESSION lz4';
END
$$;
