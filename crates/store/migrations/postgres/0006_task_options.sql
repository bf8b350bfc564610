-- What a task overrides of its agent's definition: the workspace base, the output schema.
ALTER TABLE tasks ADD COLUMN options json;
