-- One write transaction of the benchmark load, applied identically to bench
-- and to the untouched bench_control in the same transaction: an update
-- (50 %), a key update (10 %), an insert (30 %) or a delete (10 %).
\set id random(1, :rows)
\set op random(1, 10)
\set r random(1, 1000000000)
BEGIN;
\if :op <= 5
UPDATE bench SET note = md5(:r::text), amount = amount + 1 WHERE id = :id;
UPDATE bench_control SET note = md5(:r::text), amount = amount + 1 WHERE id = :id;
\elif :op = 6
-- A key update: the row moves to a negative key no random pick reaches again.
UPDATE bench SET id = -id WHERE id = :id;
UPDATE bench_control SET id = -id WHERE id = :id;
\elif :op <= 9
SELECT nextval('bench_new_id') AS nid \gset
INSERT INTO bench (id, account, amount, note) VALUES (:nid, :id % 10000, 1, md5(:r::text));
INSERT INTO bench_control (id, account, amount, note) VALUES (:nid, :id % 10000, 1, md5(:r::text));
\else
DELETE FROM bench WHERE id = :id;
DELETE FROM bench_control WHERE id = :id;
\endif
END;
