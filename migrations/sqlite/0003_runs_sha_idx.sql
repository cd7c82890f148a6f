-- A commit status combines the newest run of every run group of the commit
-- (`Store::runs_of_commit`, looked up by `LOWER(sha)`): this index finds a commit's runs
-- without reading the whole runs table.
CREATE INDEX runs_sha_idx ON runs (LOWER(sha));
