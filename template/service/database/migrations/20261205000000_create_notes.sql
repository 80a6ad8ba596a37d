-- The notes. The rules the API checks are also the table's, so no other
-- writer can break them.
CREATE TABLE notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title text NOT NULL UNIQUE CHECK (char_length(title) BETWEEN 1 AND 100),
    body text NOT NULL DEFAULT '' CHECK (char_length(body) <= 10000),
    -- Raised by every change: the ETag, and the guard against lost updates.
    version bigint NOT NULL DEFAULT 1
);
