-- Times the bot keeps across restarts, shared by every process on the store: the start
-- of the last poll that covered every project and whose decisions were committed
-- (`last-full-poll`), from which the next poll looks back for runs that started and
-- finished unseen (`Store::advance_watermark`). A watermark only moves forward.
CREATE TABLE watermarks (
    name TEXT    PRIMARY KEY,
    at   INTEGER NOT NULL
);
