-- halo_migrate 0.1.0 → 0.2.0 (ALTER EXTENSION halo_migrate UPDATE).
--
-- 0.2.0's library refuses to act while the SQL objects are another version
-- than the library, and its resumer leaves migrations in flight untouched
-- until this update has run. It names a shadow's indexes halo_index_<oid>_<n>
-- and pairs them by definition at the swap, so shadows of tables with the
-- same index names in different schemas no longer collide in the schema
-- migrate; a shadow built by 0.1.0 with its table's index names still pairs.
--
-- Rules for the scripts that follow (scripts/upgrade-test.sh checks the
-- result against a fresh CREATE EXTENSION, object by object):
-- - Every change to src/schema.sql or to a #[pg_extern]'s declaration gets
--   its statement here; state tables are altered in place (ADD COLUMN with
--   a default, never a rewrite that loses rows of migrations in flight).
-- - A function's existing arguments keep their position and type: new ones
--   are appended with a default. Between a package upgrade and this update,
--   old declarations call the new library; an argument it does not receive
--   fails cleanly, one of another type would not.
-- - Never call one of halo_migrate's C functions here: during a chained
--   update (0.1.0 -> 0.2.0 -> 0.3.0) each script sees its own step's version
--   in pg_extension, not the library's, and the functions refuse to act.
-- - A changed return type or argument list is DROP FUNCTION + CREATE
--   FUNCTION ... AS 'MODULE_PATHNAME', '<fn>_wrapper', with the grants and
--   comments of the fresh install.

-- Our primary key takes a name no table's default index names can have: the
-- transient twin that start() makes of a table named "migrations" (with its
-- migrations_pkey) would otherwise collide with it.
ALTER INDEX migrate.migrations_pkey RENAME TO migrations_halo_pkey;

-- wait() took a worker that had just started and registered itself for one
-- that was gone ("interrupted"): it now also reads the live workers after
-- the migration's row.
CREATE OR REPLACE PROCEDURE migrate.wait(tbl regclass, timeout interval DEFAULT NULL)
-- No SET search_path: a procedure with one cannot COMMIT. Everything is
-- schema-qualified instead.
LANGUAGE plpgsql AS $fn$
DECLARE
    m migrate.migrations;
    live integer[];
    deadline timestamptz := pg_catalog.clock_timestamp() + timeout;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tbl must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF timeout IS NOT NULL AND timeout <= interval '0' THEN
        RAISE EXCEPTION 'invalid value for timeout' USING ERRCODE = '22023', DETAIL = 'It must be a positive interval.',
            HINT = 'Give e.g. ''10 minutes'', or NULL to wait as long as it takes.';
    END IF;
    LOOP
        -- Before the row: see migrate.live_workers().
        live := migrate.live_workers();
        SELECT * INTO m FROM migrate.migrations mm WHERE mm.relid = tbl
         ORDER BY mm.phase IN ('done', 'failed', 'aborted'), mm.id DESC LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'table % has no migration', tbl USING ERRCODE = '55000',
                HINT = pg_catalog.format('Start one with SELECT migrate.start(%L, ''<subcommands>'').', tbl::text);
        END IF;
        EXIT WHEN m.phase IN ('done', 'ready');
        IF m.phase = 'failed' THEN
            RAISE EXCEPTION 'migration % of % failed: %', m.id, m.table_name, m.error
                USING ERRCODE = coalesce(m.error_sqlstate, 'XX000'), DETAIL = coalesce(m.error_detail, ''),
                      HINT = coalesce(m.error_hint, 'The table is as it was before the migration (see migrate.status()).');
        ELSIF m.phase = 'aborted' THEN
            RAISE EXCEPTION 'migration % of % was aborted', m.id, m.table_name USING ERRCODE = '55000',
                HINT = 'Start it again with migrate.start().';
        -- Gone only if it is in neither list: read before the row (a worker
        -- that ends its migration and exits after it) and after the row (a
        -- worker that started and registered itself in between).
        ELSIF m.worker_pid IS NOT NULL AND NOT m.worker_pid = ANY (live)
              AND NOT m.worker_pid = ANY (migrate.live_workers()) THEN
            RAISE EXCEPTION 'migration % of % is interrupted: its worker is gone', m.id, m.table_name
                USING ERRCODE = '55000',
                      HINT = pg_catalog.format('SELECT migrate.resume(%L) continues it from its last checkpoint.', m.table_name);
        ELSIF pg_catalog.clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'migrate.wait() timed out; migration % of % is still %', m.id, m.table_name, m.phase
                USING ERRCODE = '57014', DETAIL = 'The migration goes on.';
        END IF;
        COMMIT;
        PERFORM pg_catalog.pg_sleep(0.2);
    END LOOP;
    RAISE NOTICE 'migration % of % is %', m.id, m.table_name, m.phase;
END
$fn$;

-- Partitioned tables: DDL on a partition (ALTER TABLE, CREATE INDEX on it,
-- CREATE TABLE … PARTITION OF) is refused while a migration of a
-- partitioned table above it is under way.
CREATE OR REPLACE FUNCTION migrate.migrating(rel oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF migrate.internal_ddl() THEN
        RETURN NULL;
    END IF;
    -- a partition's DDL guards the partitioned tables above it
    RETURN (SELECT m.table_name FROM migrate.migrations m
             WHERE (m.relid = rel
                    OR m.relid IN (SELECT a.relid FROM pg_partition_ancestors(rel) a))
               AND (m.phase IN ('copying', 'indexing', 'replaying', 'verifying', 'ready', 'swapping')
                    -- a two-phase plan validates in steps
                    OR (m.phase = 'validating' AND m.strategy = 'two-phase')
                    -- a revert window: the kept table must keep matching
                    OR m.revertible_until IS NOT NULL)
             LIMIT 1);
END
$fn$;
COMMENT ON FUNCTION migrate.migrating(oid) IS
    'halo_migrate: the name of this table if a migration guards it from DDL now (before its swap, and unless the DDL is the migration''s own)';

COMMENT ON FUNCTION migrate.refuse_ddl_during_migration() IS
    'halo_migrate: refuses ALTER TABLE / CREATE INDEX on a table (or a new partition of it) while it is being migrated';

DROP EVENT TRIGGER halo_migrate_refuse_ddl;
CREATE EVENT TRIGGER halo_migrate_refuse_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'ALTER INDEX', 'CREATE TABLE')
    EXECUTE FUNCTION migrate.refuse_ddl_during_migration();
