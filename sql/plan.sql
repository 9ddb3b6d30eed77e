-- migrate.plan(): the SQL surface and its error messages.
\set SHOW_CONTEXT never
CREATE EXTENSION halo_migrate;
CREATE TABLE accounts (
    id      serial PRIMARY KEY,
    email   varchar(50),
    balance int NOT NULL DEFAULT 0,
    note    text
);
CREATE INDEX accounts_email_idx ON accounts (email);
INSERT INTO accounts (email, balance) SELECT 'user' || g, g FROM generate_series(1, 1000) g;

-- OIDs differ between runs: show them as OID.
CREATE FUNCTION show_plan(tbl regclass, alter_ text)
RETURNS TABLE (step int, strategy text, sql text, lock text, rewrites boolean)
LANGUAGE sql AS $$
    SELECT step, strategy, regexp_replace(sql, '_[0-9]{4,}', '_OID', 'g'), lock, rewrites
      FROM migrate.plan(tbl, alter_)
$$;

-- instant: catalog-only changes
SELECT * FROM show_plan('accounts', 'ALTER COLUMN email TYPE varchar(100)');
SELECT * FROM show_plan('accounts', 'ALTER COLUMN email TYPE text');
SELECT * FROM show_plan('accounts', 'ADD COLUMN created timestamptz NOT NULL DEFAULT now(), DROP COLUMN note');
SELECT * FROM show_plan('accounts', 'RENAME COLUMN note TO remarks');
SELECT * FROM show_plan('accounts', 'SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01)');

-- two-phase: NOT VALID, then VALIDATE under a weaker lock
SELECT * FROM show_plan('accounts', 'ADD CONSTRAINT positive CHECK (balance >= 0)');
SELECT * FROM show_plan('accounts', 'ADD CHECK (balance < 1000000)');
SELECT * FROM show_plan('accounts', 'ALTER COLUMN email SET NOT NULL');
CREATE TABLE owners (email varchar(50) PRIMARY KEY);
SELECT * FROM show_plan('accounts', 'ADD FOREIGN KEY (email) REFERENCES owners (email) ON DELETE CASCADE');

-- concurrent: unique indexes built CONCURRENTLY, attached with USING INDEX
SELECT * FROM show_plan('accounts', 'ADD CONSTRAINT accounts_email_uniq UNIQUE (email)');

-- rewrite: the online copy
SELECT * FROM show_plan('accounts', 'ALTER COLUMN id TYPE bigint');
SELECT * FROM show_plan('accounts', 'ALTER COLUMN balance TYPE numeric(12,2) USING balance / 100.0, ADD COLUMN r float8 DEFAULT random()');

-- partitioned: per-partition builds and validations, attached by the parent
CREATE TABLE events (id int NOT NULL, ts int NOT NULL, email varchar(50)) PARTITION BY RANGE (ts);
CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);
CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200) PARTITION BY HASH (id);
CREATE TABLE events_2a PARTITION OF events_2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_2b PARTITION OF events_2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
SELECT * FROM show_plan('events', 'ADD PRIMARY KEY (id, ts), ADD FOREIGN KEY (email) REFERENCES owners (email), ADD COLUMN note text');
SELECT * FROM show_plan('events', 'ALTER COLUMN email SET NOT NULL');
SELECT * FROM migrate.plan('events', 'ADD PRIMARY KEY (id)');
-- a rewrite of the tree: partition by partition, one swap
SELECT * FROM show_plan('events', 'ADD COLUMN r float8 DEFAULT random()');
SELECT * FROM show_plan('events', 'ALTER COLUMN email TYPE varchar(100)');
-- a sub-partition's key keeps its type, as PostgreSQL says
SELECT * FROM migrate.plan('events', 'ALTER COLUMN id TYPE bigint');
SELECT * FROM migrate.plan('events_1', 'ALTER COLUMN id TYPE bigint');

-- plan() changed nothing
SELECT count(*) AS accounts_rows FROM accounts;
SELECT count(*) AS extension_objects FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname NOT LIKE 'migrations%';
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'accounts'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;

-- Errors: message, detail and hint as the user sees them
SELECT * FROM migrate.plan('accounts', 'ADD COLUMN a int; DROP TABLE accounts');
SELECT * FROM migrate.plan('accounts', 'ADD COLUMN a int,');
SELECT * FROM migrate.plan('accounts', 'ALTER COLUMN nope TYPE bigint');
SELECT * FROM migrate.plan('accounts', 'DROP CONSTRAINT nope');
SELECT * FROM migrate.plan('accounts', 'ADD COLUMN owner varchar(50) REFERENCES owners');
SELECT * FROM migrate.plan('nope', 'ADD COLUMN a int');
CREATE TABLE nokey (a int);
SELECT * FROM migrate.plan('nokey', 'ALTER COLUMN a TYPE bigint');
SELECT * FROM show_plan('nokey', 'ADD COLUMN b int');
CREATE VIEW accounts_view AS SELECT id, email FROM accounts;
SELECT * FROM migrate.plan('accounts_view', 'ADD COLUMN a int');
CREATE ROLE halo_regress_stranger;
GRANT USAGE ON SCHEMA migrate TO halo_regress_stranger;
SET ROLE halo_regress_stranger;
SELECT * FROM migrate.plan('accounts', 'ADD COLUMN a int');
RESET ROLE;

-- SQLSTATEs of refused input
CREATE FUNCTION sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TEMP TABLE scratch (a int PRIMARY KEY);
CREATE TABLE parted (a int PRIMARY KEY) PARTITION BY RANGE (a);
SELECT q, sqlstate_of(q) FROM (VALUES
    ($$SELECT * FROM migrate.plan('accounts', 'ADD COLUMN a int; SELECT 1')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'SELECT 1')$$),
    ($$SELECT * FROM migrate.plan('accounts', '')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'ADD COLUMN')$$),
    ($$SELECT * FROM migrate.plan('accounts', NULL)$$),
    ($$SELECT * FROM migrate.plan(NULL, 'ADD COLUMN a int')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'ALTER COLUMN nope TYPE int')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'DROP CONSTRAINT nope')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'ALTER COLUMN email TYPE nosuchtype')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'ADD PRIMARY KEY (email)')$$),
    ($$SELECT * FROM migrate.plan('accounts', 'ATTACH PARTITION p DEFAULT')$$),
    ($$SELECT * FROM migrate.plan('accounts_view', 'ADD COLUMN a int')$$),
    ($$SELECT * FROM migrate.plan('scratch', 'ADD COLUMN b int')$$),
    ($$SELECT * FROM migrate.plan('parted', 'ALTER COLUMN a TYPE bigint')$$),
    ($$SELECT * FROM migrate.plan('pg_class', 'ADD COLUMN b int')$$),
    ($$SELECT * FROM migrate.plan('accounts_id_seq', 'ADD COLUMN b int')$$)
) AS cases(q);
REVOKE USAGE ON SCHEMA migrate FROM halo_regress_stranger;
DROP ROLE halo_regress_stranger;

-- leave the database as we found it
DROP EXTENSION halo_migrate;
