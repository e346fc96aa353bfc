-- Nothing to add on SQLite: a send's progress matches keys with GLOB, which the key's unique
-- index (BINARY) serves. This migration keeps the two directories numbered alike.
SELECT 1;
