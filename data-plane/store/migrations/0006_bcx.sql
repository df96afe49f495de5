-- BCX (binary data upload): upload tokens and uploaded blobs.
-- Portable SQL as in 0001: TEXT/BIGINT only; timestamps are Unix milliseconds.

-- A token is stored only as its SHA-256 (lowercase hex), like CM's endpoint tokens.
CREATE TABLE bcx_tokens (
    token_hash  TEXT   NOT NULL PRIMARY KEY,
    instance    TEXT   NOT NULL,
    endpoint_id TEXT   NOT NULL,
    app_version TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX bcx_tokens_created ON bcx_tokens (created_at);

-- One blob per instance, endpoint and name (a new upload under the same name replaces it).
-- content is base64 text: SQLite's BLOB and PostgreSQL's BYTEA differ, TEXT is the same on both.
CREATE TABLE bcx_blobs (
    instance     TEXT   NOT NULL,
    endpoint_id  TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    content_type TEXT   NOT NULL,
    size         BIGINT NOT NULL,
    content      TEXT   NOT NULL,
    uploaded_at  BIGINT NOT NULL,
    PRIMARY KEY (instance, endpoint_id, name)
);
