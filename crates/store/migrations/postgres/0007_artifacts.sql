-- The files agents left in $SMITH_ARTIFACTS, recorded after their bytes are stored (in the
-- artifact storage, keyed <tenant>/<task>/<name>). A later attempt's file of the same name
-- replaces the row. `tenant` is the task's, copied so that a tenant's total is one index scan.
CREATE TABLE artifacts (
    task_id    uuid NOT NULL,
    name       text NOT NULL,
    tenant     text NOT NULL,
    size       bigint NOT NULL,
    sha256     text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (task_id, name)
);
CREATE INDEX artifacts_tenant ON artifacts (tenant) INCLUDE (size);
