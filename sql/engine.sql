-- The engine's SQL surface: start/step/finish/abort/status and their errors.
CREATE EXTENSION halo_migrate;
\set VERBOSITY default
-- CONTEXT lines name objects by OID, which vary between installs.
\set SHOW_CONTEXT never
CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL, note text);
INSERT INTO acct SELECT g, g * 10, 'n' || g FROM generate_series(1, 1000) g;
-- bad arguments: nothing is created
SELECT migrate.start('acct', 'ALTER COLUMN balance TYPE bigint', batch_rows => -5);
SELECT migrate.start('acct', 'ALTER COLUMN balance TYPE bigint', lock_timeout => '0');
SELECT migrate.start('acct', 'ALTER COLUMN balance TYPE bigint', lock_timeout => '2 hours');
SELECT migrate.start('acct', 'ALTER COLUMN balance TYPE bigint', auto_finish => NULL);
SELECT migrate.start(NULL, 'ALTER COLUMN balance TYPE bigint');
SELECT migrate.finish('acct');
SELECT migrate.abort('acct');
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT count(*) FROM migrate.status();
-- an instant change is carried out at once
SELECT migrate.start('acct', 'ADD COLUMN flag boolean') AS instant_id \gset
SELECT strategy, phase, rows_copied FROM migrate.status() WHERE id = :instant_id;
-- a rewrite driven by step(), in this session
SELECT migrate.start('acct', 'ALTER COLUMN balance TYPE bigint', batch_rows => 400, background => false) AS id \gset
SELECT strategy, phase, rows_total, worker_pid FROM migrate.status() WHERE id = :id;
SELECT migrate.start('acct', 'ALTER COLUMN note TYPE varchar(20)');
TRUNCATE acct;
ALTER TABLE acct ADD COLUMN other int;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
UPDATE acct SET balance = -1 WHERE id = 1;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
SELECT phase, rows_copied, backlog FROM migrate.status() WHERE id = :id;
SELECT migrate.finish('acct') LIKE 'migration % of public.acct done: 1000 rows copied, swapped in % s' AS finished;
SELECT phase, percent FROM migrate.status() WHERE id = :id;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'acct'::regclass AND attname = 'balance';
SELECT count(*), sum(balance) FROM acct;
SELECT count(*) AS leftovers FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname NOT LIKE 'migrations%';
-- abort removes everything
SELECT migrate.start('acct', 'ALTER COLUMN note TYPE varchar(20)', background => false) AS id2 \gset
SELECT regexp_replace(migrate.step('acct'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step;
-- runtime control: pause holds step() still, throttle validates and reports
SELECT migrate.pause('acct');
SELECT phase FROM migrate.status() WHERE id = :id2;
SELECT migrate.step('acct');
SELECT migrate.throttle('acct', batch_rows => 500, batch_pause => '10ms', target_batch_time => '1s');
SELECT migrate.throttle('acct', batch_rows => -1);
SELECT migrate.throttle('acct', batch_pause => '2 days');
CREATE ROLE halo_no_stats;
GRANT SELECT, UPDATE ON migrate.migrations TO halo_no_stats;
UPDATE migrate.migrations SET role_oid = 'halo_no_stats'::regrole WHERE id = :id2;
SET ROLE halo_no_stats;
SELECT migrate.throttle('acct', max_replica_lag => '5s');
RESET ROLE;
SELECT migrate.throttle('acct', max_replica_lag => '5s', target_batch_time => '0');
SELECT migrate.resume('acct');
SELECT phase FROM migrate.status() WHERE id = :id2;
SELECT migrate.abort('acct');
SELECT phase FROM migrate.status() WHERE id = :id2;
SELECT count(*) AS leftovers FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname NOT LIKE 'migrations%';
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'acct'::regclass;
-- concurrent plans need the worker; migrate.wait() errors
SELECT migrate.start('acct', 'ADD UNIQUE (note)', background => false);
CALL migrate.wait('acct', '-1s');
CALL migrate.wait(NULL);
CREATE TABLE never_migrated (id int PRIMARY KEY);
CALL migrate.wait('never_migrated');
CALL migrate.wait('acct');
-- a verified rewrite: the shadow is compared with the ALTERed table before the swap
CREATE TABLE ver (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO ver SELECT g, g FROM generate_series(1, 1000) g;
SELECT migrate.start('ver', 'ALTER COLUMN id TYPE text', verify => true);
SELECT migrate.start('ver', 'ALTER COLUMN id TYPE bigint USING id * 2', verify => true);
SELECT count(*) AS leftovers FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname NOT LIKE 'migrations%';
SELECT migrate.start('ver', 'ALTER COLUMN v SET DEFAULT 0', verify => true) > 0 AS instant;
SELECT migrate.start('ver', 'ALTER COLUMN v TYPE bigint', batch_rows => 400, background => false, verify => true) AS vid \gset
SELECT regexp_replace(migrate.step('ver'), '(shadow|index)_[0-9]+', '\1_<oid>', 'g') AS step FROM generate_series(1, 8);
SELECT phase, verify_rows, verify_chunks, verify_differences, verified_at IS NOT NULL AS verified FROM migrate.status() WHERE id = :vid;
SELECT regexp_replace(migrate.finish('ver'), ' in [0-9.]+ s$', '') AS finished;
DROP TABLE ver;
-- revertible cut-over: arguments, refusals, the window, revert and forget
CREATE TABLE rev (id int PRIMARY KEY, v int NOT NULL, legacy text);
INSERT INTO rev SELECT g, g, 'x' FROM generate_series(1, 100) g;
SELECT migrate.start('rev', 'ALTER COLUMN v TYPE bigint', revertible => true, revert_window => '0s');
SELECT migrate.start('rev', 'ALTER COLUMN v TYPE bigint', revert_window => '1h');
SELECT migrate.start('rev', 'ALTER COLUMN v TYPE bigint', revertible => true, down => '[1]');
SELECT migrate.start('rev', 'ALTER COLUMN v TYPE bigint', revertible => true, down => '{"v": "v +"}');
SELECT migrate.start('rev', 'DROP COLUMN legacy CASCADE, ALTER COLUMN v TYPE bigint', revertible => true);
SELECT step, strategy, regexp_replace(sql, '_[0-9]+', '_<oid>', 'g') AS sql FROM migrate.plan('rev', 'DROP COLUMN legacy', revertible => true) ORDER BY step DESC LIMIT 2;
SELECT migrate.start('rev', 'ALTER COLUMN v SET DEFAULT 0', revertible => true);
SELECT count(*) AS leftovers FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname NOT LIKE 'migrations%';
SELECT migrate.revert('rev');
SELECT migrate.revert(NULL);
SELECT migrate.forget('never_migrated');
SELECT migrate.start('rev', 'ALTER COLUMN v TYPE bigint', revertible => true, background => false) AS rid \gset
SELECT regexp_replace(migrate.finish('rev'), ' in [0-9.]+ s, revertible until .*$', '') AS finished;
SELECT phase, revertible_until > now() + interval '23 hours' AS open_a_day, kept_bytes > 0 AS kept FROM migrate.status() WHERE id = :rid;
ALTER TABLE rev ADD COLUMN w int;
TRUNCATE rev;
DROP TABLE rev;
SELECT migrate.start('rev', 'ALTER COLUMN v TYPE int');
UPDATE rev SET v = v + 1 WHERE id <= 10;
SELECT regexp_replace(migrate.revert('rev'), ' in [0-9.]+ s$', '') AS reverted;
SELECT format_type(atttypid, atttypmod) AS v_type FROM pg_attribute WHERE attrelid = 'rev'::regclass AND attname = 'v';
SELECT sum(v) FROM rev;
SELECT migrate.forget('rev');
SELECT migrate.revert('rev');
SELECT count(*) AS leftovers FROM pg_class WHERE relnamespace = 'migrate'::regnamespace AND relname NOT LIKE 'migrations%';
DROP TABLE rev;
DROP TABLE acct, never_migrated;
REVOKE ALL ON migrate.migrations FROM halo_no_stats;
DROP ROLE halo_no_stats;
DROP EXTENSION halo_migrate;
