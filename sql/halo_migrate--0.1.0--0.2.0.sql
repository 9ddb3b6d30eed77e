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
--   are appended with a default, on a C symbol of its own. Between a package
--   upgrade and this update, old declarations call the new library, whose
--   wrapper unboxes every argument it declares: the old symbol stays, with
--   the old arguments (#[pg_extern(sql = false)]), and refuses until the
--   update like every function (start() and start_with_version_wrapper).
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
        SELECT * INTO m FROM migrate.migrations mm WHERE mm.relid = tbl AND mm.tree_id IS NULL
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
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'ALTER INDEX', 'CREATE TABLE', 'CREATE FOREIGN TABLE')
    EXECUTE FUNCTION migrate.refuse_ddl_during_migration();

-- Progress through the index builds: the time the phase began (stamped by a
-- trigger), how far PostgreSQL reports the running build, and status()
-- showing the index phase's own percent and ETA.
ALTER TABLE migrate.migrations ADD COLUMN phase_since timestamptz;
UPDATE migrate.migrations SET phase_since = updated_at;
ALTER TABLE migrate.migrations
    ALTER COLUMN phase_since SET DEFAULT pg_catalog.clock_timestamp(),
    ALTER COLUMN phase_since SET NOT NULL;

-- A partitioned table's rewrite: the tree's row and one row per partition.
ALTER TABLE migrate.migrations
    ADD COLUMN tree_id bigint REFERENCES migrate.migrations (id),
    ADD COLUMN jobs integer;

-- Versioned (expand/contract) migrations.
ALTER TABLE migrate.migrations
    ADD COLUMN version text,
    ADD COLUMN version_schema text,
    ADD COLUMN up_sql jsonb,
    ADD COLUMN expand_undo text[] NOT NULL DEFAULT '{}',
    ADD COLUMN contract_sql text[] NOT NULL DEFAULT '{}',
    ADD COLUMN backfill_sql text;
CREATE FUNCTION migrate.stamp_phase() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF NEW.phase IS DISTINCT FROM OLD.phase THEN
        NEW.phase_since := pg_catalog.clock_timestamp();
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION migrate.stamp_phase() IS
    'halo_migrate: keeps migrate.migrations.phase_since, the time the current phase began';
CREATE TRIGGER migrations_stamp_phase BEFORE UPDATE OF phase ON migrate.migrations
    FOR EACH ROW EXECUTE FUNCTION migrate.stamp_phase();

CREATE FUNCTION migrate.index_build_progress(pid integer) RETURNS numeric
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT CASE
             WHEN p.phase = 'building index: scanning table' AND p.blocks_total > 0
               THEN 0.5 * least(p.blocks_done::numeric / p.blocks_total, 1)
             WHEN p.phase LIKE 'building index: sorting%' THEN 0.5
             WHEN p.phase = 'building index: loading tuples in tree'
               THEN 0.5 + 0.5 * least(coalesce(p.tuples_done::numeric / nullif(p.tuples_total, 0), 0), 1)
             WHEN p.phase LIKE 'index validation%' OR p.phase = 'waiting for old snapshots'
               OR p.phase LIKE 'waiting for%validation' THEN 0.99
             -- other access methods report only the table scan
             WHEN p.phase LIKE 'building index%' AND p.blocks_total > 0
               THEN 0.9 * least(p.blocks_done::numeric / p.blocks_total, 1)
             ELSE 0 END
      FROM pg_stat_progress_create_index p
     WHERE p.pid = index_build_progress.pid
$fn$;
COMMENT ON FUNCTION migrate.index_build_progress(integer) IS
    'halo_migrate: how far (0 to 1) the index build running in this backend is, from pg_stat_progress_create_index';

-- A partitioned table's rewrite shows its partitions' rows (part_of): a
-- new column, so the function is dropped and created again.
DROP FUNCTION migrate.status(regclass);
CREATE FUNCTION migrate.status(tbl regclass DEFAULT NULL)
RETURNS TABLE (id bigint, table_name text, alter_sql text, strategy text, phase text,
               rows_copied bigint, rows_total bigint, percent numeric, backlog bigint,
               rate_rows_s numeric, eta interval, worker_pid integer,
               started_at timestamptz, updated_at timestamptz, error text, waiting_for text,
               verify_rows bigint, verify_chunks bigint, verify_differences bigint,
               verified_at timestamptz, revertible_until timestamptz, kept_bytes bigint,
               reverts bigint, part_of bigint)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
DECLARE
    -- The live workers are read both before and after the rows: a worker
    -- that ends its migration and exits between the reads is in the first,
    -- one that registers itself between them is in the second. Either way
    -- a running migration never shows as interrupted by accident.
    live integer[] := migrate.live_workers();
BEGIN
    RETURN QUERY
    SELECT m.id, m.table_name, m.alter_sql, m.strategy,
           CASE WHEN m.phase IN ('done', 'failed', 'aborted') THEN m.phase
                -- a partition's part is paused with its tree
                WHEN m.paused OR coalesce(tree.paused, false) THEN 'paused'
                -- a worker was running it and is gone (terminated, crashed, server restarted)
                WHEN m.worker_pid IS NOT NULL AND NOT w.alive THEN 'interrupted'
                -- a versioned migration: its phases by their own names
                WHEN m.strategy = 'versioned' AND m.phase = 'copying' THEN 'backfilling'
                WHEN m.strategy = 'versioned' AND m.phase = 'indexing' THEN 'validating'
                WHEN m.strategy = 'versioned' AND m.phase = 'ready' THEN 'expanded'
                ELSE m.phase END,
           m.rows_copied, m.rows_total,
           -- the current phase's progress: statements (of a plan of
           -- statements) or indexes done, counting the one being built by
           -- how far PostgreSQL reports it; rows copied
           CASE WHEN m.phase = 'done' THEN 100.0
                WHEN m.strategy IN ('concurrent', 'two-phase') OR m.phase = 'indexing'
                THEN round(100.0 * least(i.done / greatest(cardinality(m.index_sql), 1), 1), 1)
                -- a versioned migration's backfill: heap blocks (only rows
                -- that need a value are written, so rows say little)
                WHEN m.strategy = 'versioned' AND m.phase = 'copying'
                THEN round(100.0 * least(m.copy_next, m.copy_end) / greatest(m.copy_end, 1), 1)
                WHEN m.strategy = 'versioned' AND m.phase = 'ready' THEN 100.0
                WHEN m.rows_total > 0 THEN round(100.0 * least(m.rows_copied, m.rows_total) / m.rows_total, 1)
                WHEN m.phase <> 'copying' THEN 100.0 END,
           m.backlog,
           r.rate,
           -- no ETA while paused: nothing moves until resume()
           CASE WHEN m.paused THEN NULL
                -- index builds: the time they have taken, extrapolated
                -- (from a twentieth of one build on, and at most a year: a
                -- pause or an outage in the phase counts as time taken)
                WHEN m.phase = 'indexing' AND m.strategy = 'rewrite' AND i.done >= 0.05
                THEN make_interval(secs => least(round(extract(epoch FROM pg_catalog.clock_timestamp() - m.phase_since)
                                                        * (greatest(cardinality(m.index_sql), 1) - i.done) / i.done, 1),
                                                  31536000)::float8)
                -- before the first build has moved: not known yet
                WHEN m.phase = 'indexing' AND m.strategy = 'rewrite' THEN NULL
                WHEN m.phase IN ('copying', 'indexing', 'replaying') AND r.rate > 0
                THEN make_interval(secs => round((greatest(m.rows_total - m.rows_copied, 0) + m.backlog) / r.rate, 1)::float8)
                WHEN m.phase IN ('ready', 'done') THEN interval '0' END,
           CASE WHEN w.alive THEN m.worker_pid END,
           m.started_at, m.updated_at, m.error,
           CASE WHEN m.phase IN ('replaying', 'ready', 'swapping') THEN m.waiting_for END,
           -- verification (start(verify => true)): the current or the clean pass
           CASE WHEN m.verify THEN m.verify_rows END,
           CASE WHEN m.verify THEN m.verify_chunks END,
           CASE WHEN m.verify THEN m.verify_differences END,
           m.verified_at,
           -- revertible cut-over: the window and the disk the kept table holds
           m.revertible_until,
           CASE WHEN m.revertible_until IS NOT NULL
                THEN pg_catalog.pg_total_relation_size(pg_catalog.to_regclass('migrate.shadow_' || m.relid))
                   + coalesce(pg_catalog.pg_total_relation_size(pg_catalog.to_regclass('migrate.log_' || m.relid)), 0) END,
           m.reverts,
           m.tree_id
      FROM migrate.migrations m
      LEFT JOIN migrate.migrations tree ON tree.id = m.tree_id
      CROSS JOIN LATERAL (SELECT round(m.rows_copied / nullif(extract(epoch FROM m.updated_at - m.started_at), 0), 0) AS rate) r
      CROSS JOIN (SELECT migrate.live_workers() AS pids OFFSET 0) after
      CROSS JOIN LATERAL (SELECT coalesce(m.worker_pid = ANY (live) OR m.worker_pid = ANY (after.pids), false) AS alive) w
      CROSS JOIN LATERAL (SELECT m.indexes_built
                                 + CASE WHEN w.alive THEN coalesce(migrate.index_build_progress(m.worker_pid), 0) ELSE 0 END
                                 AS done) i
     -- a partitioned table's rewrite: the tree's row, then one per partition
     WHERE tbl IS NULL OR m.relid = tbl
        OR m.tree_id IN (SELECT t.id FROM migrate.migrations t WHERE t.relid = tbl)
     ORDER BY coalesce(m.tree_id, m.id) DESC, m.tree_id IS NOT NULL, m.id;
END
$fn$;
COMMENT ON FUNCTION migrate.status(regclass) IS
    'halo_migrate: every migration (of one table, if given), newest first: phase, progress, backlog, rate, ETA, worker, error, what the swap waits for, verification, revert window';

-- start() takes jobs => (the workers of a partitioned table's rewrite),
-- version => and up => (versioned migrations): arguments appended, so the
-- function is dropped and created again, on a C symbol of its own (the old
-- start_wrapper unboxes the old arguments).
DROP FUNCTION migrate.start(regclass, text, integer, interval, boolean, boolean, boolean,
                            boolean, boolean, interval, jsonb);
CREATE FUNCTION migrate."start"(
	"tbl" regclass,
	"alter" TEXT,
	"batch_rows" INT DEFAULT NULL,
	"lock_timeout" interval DEFAULT '100ms',
	"auto_finish" bool DEFAULT false,
	"background" bool DEFAULT true,
	"snapshot_safe" bool DEFAULT NULL,
	"verify" bool DEFAULT NULL,
	"revertible" bool DEFAULT NULL,
	"revert_window" interval DEFAULT NULL,
	"down" jsonb DEFAULT NULL,
	"jobs" INT DEFAULT NULL,
	"version" TEXT DEFAULT NULL,
	"up" jsonb DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'start_with_version_wrapper';

-- The live versions of versioned (expand/contract) migrations: one row per
-- migration whose version schema exists. Which sessions read a version
-- cannot be known in general (pg_stat_activity does not show their
-- search_path): sessions_now counts those holding a lock on one of its
-- views now, that is, inside a transaction that used it.
CREATE FUNCTION migrate.versions()
RETURNS TABLE (version text, version_schema text, table_name text, migration bigint,
               phase text, sessions_now integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT m.version, m.version_schema, m.table_name, m.id,
           CASE WHEN m.phase = 'ready' THEN 'expanded'
                WHEN m.phase = 'done' THEN 'contracted'
                ELSE m.phase END,
           (SELECT count(DISTINCT l.pid)::integer
              FROM pg_locks l
              JOIN pg_class c ON c.oid = l.relation
              JOIN pg_namespace s ON s.oid = c.relnamespace
             WHERE s.nspname = m.version_schema AND l.pid <> pg_backend_pid())
      FROM migrate.migrations m
     WHERE m.version IS NOT NULL
       AND m.phase NOT IN ('failed', 'aborted')
       AND EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = m.version_schema)
     ORDER BY m.id
$fn$;
COMMENT ON FUNCTION migrate.versions() IS
    'halo_migrate: the live versions of versioned (expand/contract) migrations, with the sessions using each now';

-- Versioned migrations: a version schema dropped on request.
CREATE FUNCTION migrate."drop_version"(
	"version_schema" TEXT
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_version_wrapper';

-- Versioned migrations: their dry run.
CREATE FUNCTION migrate."plan_version"(
	"tbl" regclass,
	"alter" TEXT,
	"version" TEXT,
	"up" jsonb DEFAULT NULL,
	"down" jsonb DEFAULT NULL
) RETURNS TABLE (
	"step" INT,
	"phase" TEXT,
	"sql" TEXT
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'plan_version_wrapper';
