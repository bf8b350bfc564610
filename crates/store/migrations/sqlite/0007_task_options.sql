-- What a task overrides of its agent's definition: the workspace base, the output schema (JSON).
ALTER TABLE tasks ADD COLUMN options TEXT;
