-- The notes, in the embedded file: the same columns and rules as the
-- PostgreSQL table. AUTOINCREMENT: an id is never given out twice, even
-- after the newest note is deleted.
CREATE TABLE notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL UNIQUE CHECK (length(title) BETWEEN 1 AND 100),
    body TEXT NOT NULL DEFAULT '' CHECK (length(body) <= 10000),
    version INTEGER NOT NULL DEFAULT 1
);
