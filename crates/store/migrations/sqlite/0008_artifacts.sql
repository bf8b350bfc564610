-- The files agents left in $SMITH_ARTIFACTS, recorded after their bytes are stored (in the
-- artifact storage, keyed <tenant>/<task>/<name>). A later attempt's file of the same name
-- replaces the row. `tenant` is the task's, copied so that a tenant's total is one index scan.
CREATE TABLE artifacts (
    task_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, name)
) WITHOUT ROWID;
CREATE INDEX artifacts_tenant ON artifacts (tenant, size);
