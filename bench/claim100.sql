-- Raw PostgreSQL reference: claim 100 queued jobs and complete them, one transaction per batch.
BEGIN;
UPDATE rawjobs SET status = 'running', claimer = :client_id WHERE id IN (SELECT id FROM rawjobs WHERE status = 'queued' ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED);
UPDATE rawjobs SET status = 'done' WHERE status = 'running' AND claimer = :client_id;
COMMIT;
