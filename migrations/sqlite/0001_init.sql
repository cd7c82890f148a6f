-- runwarden durable store, initial schema (SQLite).
--
-- Conventions, kept so that a PostgreSQL copy of this schema needs only DDL changes:
-- timestamps are INTEGER milliseconds since the Unix epoch (UTC), booleans are INTEGER 0/1,
-- JSON (including stored webhook bodies, which are UTF-8 JSON) is TEXT, ids are INTEGER
-- (PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY). Queries live in src/store/ only.

-- Webhook intake, poll and schedule events: stored (and committed) before the sender is
-- answered, processed later, deduplicated on (source, delivery_id).
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    source          TEXT    NOT NULL,            -- currents | github | poll | schedule
    delivery_id     TEXT    NOT NULL,            -- X-GitHub-Delivery, or a derived key
    event           TEXT    NOT NULL,            -- RUN_FINISH, push, ...
    payload         TEXT    NOT NULL,            -- the body as received (JSON)
    received_at     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,  -- failed processing attempts
    next_attempt_at INTEGER NOT NULL,            -- not handed out again before this
    last_error      TEXT,
    processed_at    INTEGER,                     -- NULL: still to be processed
    outcome         TEXT,                        -- note written when processed
    CONSTRAINT deliveries_source_delivery_id_key UNIQUE (source, delivery_id)
);
CREATE INDEX deliveries_unprocessed_idx ON deliveries (next_attempt_at, received_at)
    WHERE processed_at IS NULL;
CREATE INDEX deliveries_processed_at_idx ON deliveries (processed_at)
    WHERE processed_at IS NOT NULL;

-- Runs the bot knows about (supersede lookups, idle detection, poll diffs, duration history).
CREATE TABLE runs (
    run_id              TEXT    PRIMARY KEY,
    project_id          TEXT    NOT NULL,
    branch              TEXT,
    sha                 TEXT,
    created_at          INTEGER NOT NULL,
    completion_state    TEXT    NOT NULL,        -- upper case: IN_PROGRESS, COMPLETE, ...
    status              TEXT    NOT NULL,        -- upper case: RUNNING, PASSED, ...
    run_json            TEXT    NOT NULL,        -- the full run as last read
    completed_specs     INTEGER NOT NULL DEFAULT 0,
    progress_changed_at INTEGER NOT NULL,        -- last time completed_specs changed
    duration_ms         INTEGER,
    updated_at          INTEGER NOT NULL,        -- when this observation was made
    gone                INTEGER NOT NULL DEFAULT 0 CHECK (gone IN (0, 1))
);
CREATE INDEX runs_in_progress_idx ON runs (project_id, branch)
    WHERE completion_state = 'IN_PROGRESS' AND gone = 0;
CREATE INDEX runs_passed_idx ON runs (project_id, branch, created_at)
    WHERE completion_state = 'COMPLETE' AND status = 'PASSED';

-- The outbox: one row per distinct action (action_key), whatever the number of rules that
-- decided it. Dry-run decisions create no action.
CREATE TABLE actions (
    id              INTEGER PRIMARY KEY,
    action_key      TEXT    NOT NULL,            -- cancel:RUN, delete:RUN, summarize:RUN:EVENT
    action          TEXT    NOT NULL,            -- cancel | delete | summarize
    rule            TEXT    NOT NULL,            -- the first rule that decided it
    kind            TEXT    NOT NULL,            -- that rule's kind
    run_id          TEXT    NOT NULL,
    project_id      TEXT    NOT NULL,
    branch          TEXT,
    sha             TEXT,
    payload         TEXT,                        -- JSON for the executor (summarize: the event)
    state           TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'done', 'skipped', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,  -- finished attempts (success or failure)
    claims          INTEGER NOT NULL DEFAULT 0,  -- times handed to a worker (crash loops)
    not_before      INTEGER,                     -- grace period: not executed before this
    next_attempt_at INTEGER NOT NULL,            -- retry backoff
    lease_until     INTEGER,                     -- state running: reclaimable after this
    worker_id       TEXT,
    last_error      TEXT,
    detail          TEXT,                        -- completion note (e.g. "already finished")
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    CONSTRAINT actions_action_key_key UNIQUE (action_key)
);
CREATE INDEX actions_due_idx ON actions (state, next_attempt_at);
CREATE INDEX actions_run_idx ON actions (run_id);

-- The audit log: every decision of every rule, linked to the action carrying it out.
-- A rule deciding the same action again (a redelivered event, the next poll) is recorded
-- once: UNIQUE (rule, action_key, dry_run).
CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    rule        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,                -- supersede | timeout | orphan | retention | summary
    action      TEXT    NOT NULL,
    action_key  TEXT    NOT NULL,
    run_id      TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    branch      TEXT,
    sha         TEXT,
    reason      TEXT    NOT NULL,
    dry_run     INTEGER NOT NULL DEFAULT 0 CHECK (dry_run IN (0, 1)),
    not_before  INTEGER,
    action_id   INTEGER REFERENCES actions (id) ON DELETE SET NULL,
    CONSTRAINT decisions_rule_action_key_dry_run_key UNIQUE (rule, action_key, dry_run)
);
CREATE INDEX decisions_at_idx ON decisions (at);
CREATE INDEX decisions_rule_at_idx ON decisions (rule, at);
CREATE INDEX decisions_run_idx ON decisions (run_id);
CREATE INDEX decisions_action_idx ON decisions (action_id);

-- The sticky summary comment of each pull request.
CREATE TABLE pr_comments (
    repo          TEXT    NOT NULL,              -- owner/name, lower case
    pr            INTEGER NOT NULL,
    comment_id    INTEGER NOT NULL,
    body_hash     TEXT    NOT NULL,
    sections_json TEXT    NOT NULL DEFAULT '{}',
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repo, pr)
);

-- One section of a summary comment per project and run group.
CREATE TABLE pr_sections (
    repo           TEXT    NOT NULL,
    pr             INTEGER NOT NULL,
    section_key    TEXT    NOT NULL,
    sha            TEXT    NOT NULL,
    run_id         TEXT    NOT NULL,
    run_created_at INTEGER NOT NULL,
    body           TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (repo, pr, section_key)
);

-- Cron slots: a slot is fired by whoever inserts it first.
CREATE TABLE schedule_slots (
    rule        TEXT    NOT NULL,
    slot_at     INTEGER NOT NULL,
    claimed_at  INTEGER NOT NULL,
    finished_at INTEGER,
    summary     TEXT,
    PRIMARY KEY (rule, slot_at)
);

-- Named leases (poller leadership).
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
