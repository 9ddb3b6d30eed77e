-- One write transaction of the benchmark load: an update by key and an insert.
\set id random(1, :rows)
BEGIN;
UPDATE bench SET note = md5(random()::text), amount = amount + 1 WHERE id = :id;
INSERT INTO bench (account, amount, note) VALUES (:id % 10000, 1, 'new');
END;
