-- Raw PostgreSQL reference: claim one queued job and complete it, one transaction per job.
BEGIN;
UPDATE rawjobs SET status = 'running' WHERE id = (SELECT id FROM rawjobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id \gset
UPDATE rawjobs SET status = 'done' WHERE id = :id;
COMMIT;
