-- The load for the throughput measurement: an update by key and an insert, on
-- bench only (the capture trigger's cost, undiluted by a control table).
\set id random(1, :rows)
BEGIN;
UPDATE bench SET note = md5(random()::text), amount = amount + 1 WHERE id = :id;
INSERT INTO bench (id, account, amount, note) VALUES (nextval('bench_new_id'), :id % 10000, 1, 'new');
END;
