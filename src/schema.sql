-- halo_migrate's own objects. Everything lives in schema "migrate" and is
-- schema-qualified; functions pin their search_path.

-- Shadow tables, capture logs and capture functions are created here by the
-- role that starts a migration (the owner of the table), so every role may
-- create in this schema. Nothing here is writable by another role: each
-- object is owned by the role that created it, and migrate.migrations is
-- protected by row-level security.
GRANT USAGE, CREATE ON SCHEMA migrate TO PUBLIC;

CREATE TABLE migrate.migrations (
    id              bigint GENERATED ALWAYS AS IDENTITY
                    -- not migrations_pkey: start() twins a table's indexes
                    -- under their own names in this schema for a moment, and
                    -- a table named "migrations" has that one
                    CONSTRAINT migrations_halo_pkey PRIMARY KEY,
    relid           oid NOT NULL,
    table_name      text NOT NULL,
    alter_sql       text NOT NULL,
    strategy        text NOT NULL,
    phase           text NOT NULL,
    role_oid        oid NOT NULL DEFAULT (current_user::regrole::oid),
    batch_rows      integer NOT NULL,
    lock_timeout_ms integer NOT NULL,
    auto_finish     boolean NOT NULL,
    background      boolean NOT NULL,
    -- the table's relfilenode at start: anything that rewrites it (VACUUM FULL,
    -- CLUSTER, a rewriting ALTER) invalidates the copy, and is detected
    relfilenode     oid,
    -- the rewrite recipe, generated once by start()
    search_path     text NOT NULL,                  -- the caller's, for the user's own expressions
    shadow_sql      text[] NOT NULL DEFAULT '{}',   -- subcommands applied to the shadow and, at the swap, to the table
    swap_sql        text[] NOT NULL DEFAULT '{}',   -- run in the swap transaction, after the storage swap
    index_sql       text[] NOT NULL DEFAULT '{}',   -- indexes and index-backed constraints, built after the copy;
                                                    -- for a concurrent plan, its statements in order
    concurrent_indexes text[] NOT NULL DEFAULT '{}', -- concurrent plan: the indexes it builds (removed on failure)
    undo_sql        text[] NOT NULL DEFAULT '{}',   -- concurrent and two-phase plans: what takes each statement
                                                    -- of index_sql back ('' for nothing), run in reverse on failure
    not_null_of     text[] NOT NULL DEFAULT '{}',   -- the column whose NOT NULL each statement validates ('' for none)
    post_swap_sql   text[] NOT NULL DEFAULT '{}',   -- after the swap, one transaction each (VALIDATE)
    altered_columns text[] NOT NULL DEFAULT '{}',   -- columns whose type the ALTER changes
    added_columns   text[] NOT NULL DEFAULT '{}',   -- columns the ALTER adds
    copy_targets    text,                           -- INSERT column list
    copy_exprs      text,                           -- SELECT list over the original (alias o)
    log_as_orig     text,                           -- the log's keys named as the original's key columns
    key_map         text,                           -- SELECT list mapping those into the shadow's key values
    shadow_match    text,                           -- shadow row s has mapped logged key m (typed equality)
    orig_match      text,                           -- original row o has logged key l (typed equality)
    key_columns     text[] NOT NULL DEFAULT '{}',   -- the replay key's columns
    -- verification before the swap (start(verify => true); see verify.rs)
    verify          boolean NOT NULL DEFAULT false,
    verified_at     timestamptz,                    -- when a pass found no difference
    verify_after    text[],                         -- the pass goes on after this key (NULL: from the start)
    verify_rows     bigint NOT NULL DEFAULT 0,      -- rows checked in this pass
    verify_chunks   bigint NOT NULL DEFAULT 0,      -- key ranges checked in this pass
    verify_pass_differences bigint NOT NULL DEFAULT 0, -- differences found in this pass
    verify_differences bigint NOT NULL DEFAULT 0,   -- differences found (and repaired) in all passes
    verify_passes   integer NOT NULL DEFAULT 0,     -- passes completed
    verify_repairs_until bigint,                    -- the next pass waits until the log is replayed up to this id
    -- revertible cut-over (start(revertible => true); see kept.rs and revert.rs)
    revertible      boolean NOT NULL DEFAULT false,
    revert_window   interval,                       -- how long the window stays open after the swap
    down_sql        jsonb,                          -- column => expression over the new row, for revert()
    revertible_until timestamptz,                   -- the window is open until then (NULL: closed or never)
    window_closed   text,                           -- why it closed: 'reverted', 'forgotten', 'expired'
    kept_constraints text[] NOT NULL DEFAULT '{}',  -- the table's CHECK and FOREIGN KEY constraints before the swap,
    kept_constraint_defs text[] NOT NULL DEFAULT '{}', -- their definitions,
    kept_constraint_valid boolean[] NOT NULL DEFAULT '{}', -- and whether each was validated
    kept_statistics text[] NOT NULL DEFAULT '{}',   -- its statistics objects: name, U+001F, CREATE STATISTICS
    reverts         bigint REFERENCES migrate.migrations (id), -- a revert: the migration it takes back
    undrop          text[] NOT NULL DEFAULT '{}',   -- a revert: columns the migration dropped, restored in place
    revert_sql      text[] NOT NULL DEFAULT '{}',   -- a revert: statements on the table's empty storage after the inverse ALTER
    -- runtime control (pause, resume, throttle)
    paused          boolean NOT NULL DEFAULT false,
    batch_pause_ms  integer NOT NULL DEFAULT 0,     -- sleep after each copy batch
    target_batch_ms integer,                        -- adapt batch_rows so a copy batch takes this long
    max_replica_lag_ms integer,                     -- wait while a standby's replay lag exceeds this
    -- the swap waits for older snapshots (see snapshots.rs); false: PostgreSQL's own behaviour
    snapshot_safe   boolean NOT NULL DEFAULT true,
    waiting_for     text,                           -- what the swap waits for now, if anything
    snapshot_holders integer[] NOT NULL DEFAULT '{}', -- pids of the sessions it waits for
    -- progress
    copy_next       bigint NOT NULL DEFAULT 0,      -- next heap block to copy
    copy_end        bigint,                         -- heap blocks to copy (fixed when the copy starts)
    indexes_built   integer NOT NULL DEFAULT 0,
    post_swap_done  integer NOT NULL DEFAULT 0,
    rows_copied     bigint NOT NULL DEFAULT 0,
    rows_total      bigint,
    rows_replayed   bigint NOT NULL DEFAULT 0,
    backlog         bigint NOT NULL DEFAULT 0,
    rate_rows_s     numeric,
    swap_attempts   integer NOT NULL DEFAULT 0,
    worker_pid      integer,
    started_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at     timestamptz,
    error           text,
    error_sqlstate  text,
    error_detail    text,
    error_hint      text,                           -- the failure's own hint, if it has one
    phase_since     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(), -- when the phase began
    -- a partitioned table's rewrite: one row for the tree, one per partition
    -- that holds rows (its part), each with its own capture, shadow and copy
    tree_id         bigint REFERENCES migrate.migrations (id), -- a part: the tree's migration
    jobs            integer,                        -- the tree: workers copying partitions at once
    -- a versioned (expand/contract) migration (start(version => ...); see
    -- engine/versioned.rs): the table keeps its shape, the version schema's
    -- view shows the new one, until finish() contracts
    version         text,                           -- the version's name
    version_schema  text,                           -- the schema of its views: <table's schema>_<version>
    up_sql          jsonb,                          -- column => expression over the old row
    expand_undo     text[] NOT NULL DEFAULT '{}',   -- what takes the expand phase's changes back, in order
    contract_sql    text[] NOT NULL DEFAULT '{}',   -- the contract, in one transaction at finish()
    backfill_sql    text,                           -- one backfill batch after UPDATE <table> ($1, $2: heap blocks as tids)
    CONSTRAINT migrations_phase_check CHECK (phase IN
        ('copying', 'indexing', 'replaying', 'verifying', 'ready', 'swapping', 'validating', 'done', 'failed', 'aborted'))
);
COMMENT ON TABLE migrate.migrations IS
    'halo_migrate: one row per migration; read it through migrate.status()';

-- When the phase began (status() estimates the index builds' end from it):
-- stamped here, so that every state change that moves the phase keeps it.
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

-- One live migration per table.
CREATE UNIQUE INDEX migrations_one_live_per_table ON migrate.migrations (relid)
    WHERE phase NOT IN ('done', 'failed', 'aborted');

ALTER TABLE migrate.migrations ENABLE ROW LEVEL SECURITY;
-- A role sees and changes only its own migrations, and may record one only
-- for a table it owns: a row for someone else's table would block their
-- DDL (the event triggers below) and their own migrations.
CREATE POLICY migrations_own_rows ON migrate.migrations
    USING (pg_catalog.pg_has_role(role_oid, 'MEMBER'))
    WITH CHECK (role_oid = current_user::regrole::oid
                AND EXISTS (SELECT FROM pg_catalog.pg_class c
                             WHERE c.oid = relid AND pg_catalog.pg_has_role(c.relowner, 'MEMBER')));
GRANT SELECT, INSERT, UPDATE, DELETE ON migrate.migrations TO PUBLIC;

-- DDL on a table while it is being migrated would make the shadow diverge:
-- refuse it until the swap (unless it is the swap itself); after the swap
-- (validating) nothing of the copy is left to diverge.
-- migrate.internal_ddl() (defined by the library) says whether the DDL
-- running now is the migration's own; no setting or SQL call can make it so.
-- PL/pgSQL, so that the call is resolved when the guard runs, after the
-- library's functions exist.
CREATE FUNCTION migrate.migrating(rel oid) RETURNS text
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

CREATE FUNCTION migrate.refuse_ddl_during_migration() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    busy text;
BEGIN
    -- an index's DDL guards its table
    SELECT t.name INTO busy
      FROM (SELECT migrate.migrating(coalesce(i.indrelid, c.objid)) AS name
              FROM pg_event_trigger_ddl_commands() c
              LEFT JOIN pg_index i ON i.indexrelid = c.objid
             WHERE c.classid = 'pg_class'::regclass) t
     WHERE t.name IS NOT NULL
     LIMIT 1;
    IF busy IS NOT NULL THEN
        RAISE EXCEPTION 'table % is being migrated by halo_migrate', busy
            USING ERRCODE = 'object_in_use',
                  DETAIL = 'Changing its definition now would make the migration''s copy diverge from it.',
                  HINT = 'Wait for migrate.finish(), or cancel the migration with migrate.abort() first; after a revertible migration, end its revert window with migrate.forget().';
    END IF;
END
$fn$;
COMMENT ON FUNCTION migrate.refuse_ddl_during_migration() IS
    'halo_migrate: refuses ALTER TABLE / CREATE INDEX on a table (or a new partition of it) while it is being migrated';

CREATE FUNCTION migrate.refuse_drop_during_migration() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    busy text;
BEGIN
    SELECT t.name INTO busy
      FROM (SELECT migrate.migrating(d.objid) AS name
              FROM pg_event_trigger_dropped_objects() d
             WHERE d.classid = 'pg_class'::regclass) t
     WHERE t.name IS NOT NULL
     LIMIT 1;
    IF busy IS NOT NULL THEN
        RAISE EXCEPTION 'table % is being migrated by halo_migrate', busy
            USING ERRCODE = 'object_in_use',
                  HINT = 'Cancel the migration with migrate.abort() first; after a revertible migration, end its revert window with migrate.forget().';
    END IF;
END
$fn$;
COMMENT ON FUNCTION migrate.refuse_drop_during_migration() IS
    'halo_migrate: refuses DROP TABLE of a table while it is being migrated';

CREATE EVENT TRIGGER halo_migrate_refuse_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'ALTER INDEX', 'CREATE TABLE', 'CREATE FOREIGN TABLE')
    EXECUTE FUNCTION migrate.refuse_ddl_during_migration();
CREATE EVENT TRIGGER halo_migrate_refuse_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION migrate.refuse_drop_during_migration();

-- The live workers, read afresh (the backend-status snapshot is otherwise
-- kept for the whole transaction). A worker commits the end of its
-- migration before it exits, so whoever reads this *before* reading
-- migrate.migrations never takes a worker that just finished for a gone one.
CREATE FUNCTION migrate.live_workers() RETURNS integer[]
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT pg_stat_clear_snapshot();
    SELECT ARRAY(SELECT a.pid FROM pg_stat_activity a WHERE a.backend_type = 'halo_migrate worker')
$fn$;
COMMENT ON FUNCTION migrate.live_workers() IS
    'halo_migrate: the pids of the live halo_migrate workers, read afresh';

CREATE FUNCTION migrate.worker_alive(pid integer) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce(pid = ANY (migrate.live_workers()), false)
$fn$;
COMMENT ON FUNCTION migrate.worker_alive(integer) IS
    'halo_migrate: is this pid a live halo_migrate worker?';

-- Sessions holding a snapshot in a transaction begun before `since`, for the
-- snapshot-safe swap (src/snapshots.rs). SECURITY DEFINER: a role without
-- pg_read_all_stats sees no backend_xmin or xact_start of other roles'
-- sessions, and the swap must see them all. It reveals only their pid,
-- state and transaction age; a statement's text only to members of the
-- session's role, as pg_stat_activity does.
CREATE FUNCTION migrate.snapshot_holders(tbl oid, since timestamptz, cutover_key integer)
RETURNS TABLE (pid integer, state text, xact_age_ms bigint, query text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT pg_stat_clear_snapshot();
    SELECT a.pid, coalesce(a.state, ''),
           (extract(epoch FROM clock_timestamp() - a.xact_start) * 1000)::bigint,
           CASE WHEN pg_has_role(session_user, a.usesysid, 'MEMBER')
                THEN coalesce(left(regexp_replace(a.query, '\s+', ' ', 'g'), 60), '')
                ELSE '<a statement of another role>' END
      FROM pg_stat_activity a
     WHERE a.datname = current_database()
       AND a.pid <> pg_backend_pid()
       AND a.backend_xmin IS NOT NULL
       AND a.backend_type IN ('client backend', 'background worker')
       AND a.xact_start < since
       -- holding a lock on the table: the swap's own lock waits for their
       -- transaction to end, snapshot and all; waiting for one: blocked
       -- behind the swap, and in READ COMMITTED they take a new snapshot
       AND NOT EXISTS (SELECT FROM pg_locks l
                        WHERE l.pid = a.pid AND l.locktype = 'relation'
                          AND l.relation = tbl)
       -- finish() calls, which hold or wait for the cut-over lock
       AND NOT EXISTS (SELECT FROM pg_locks l
                        WHERE l.pid = a.pid AND l.locktype = 'advisory'
                          AND l.classid = cutover_key::oid)
       -- waiting for this session: they would wait for each other
       AND NOT pg_backend_pid() = ANY (pg_blocking_pids(a.pid))
     ORDER BY a.xact_start
$fn$;
COMMENT ON FUNCTION migrate.snapshot_holders(oid, timestamptz, integer) IS
    'halo_migrate: sessions whose snapshots predate a swap of this table (pid, state, transaction age, statement if visible)';

-- How far the index build running in backend `pid` is, from 0 to 1, as
-- PostgreSQL reports it (pg_stat_progress_create_index); NULL if none runs.
-- Reading the table counts as the first half, loading the sorted tuples as
-- the second: the two take comparable time for a btree. A CONCURRENTLY
-- build's later passes (waiting for old snapshots, validating) count as
-- done with the build's second half. Between the end of a build and the
-- commit that counts it, no build is reported: the share of that index
-- shows as 0 for that moment.
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

-- Waiting from a client without holding a snapshot: CREATE INDEX
-- CONCURRENTLY (the concurrent strategy) waits for every transaction with an
-- older snapshot, so a function cannot wait for it; a procedure can, by
-- committing between checks.
CREATE PROCEDURE migrate.wait(tbl regclass, timeout interval DEFAULT NULL)
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
COMMENT ON PROCEDURE migrate.wait(regclass, interval) IS
    'halo_migrate: wait, committing between checks, until the table''s migration is done or ready for its cut-over; raises its error if it failed';
GRANT EXECUTE ON PROCEDURE migrate.wait(regclass, interval) TO PUBLIC;
