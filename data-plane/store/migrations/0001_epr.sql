-- EPR (endpoint register): endpoints, their tokens and their metadata.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (TEXT/BIGINT only, no AUTOINCREMENT,
-- no engine-specific functions). Timestamps are Unix milliseconds.

CREATE TABLE epr_endpoints (
    id          TEXT   NOT NULL PRIMARY KEY,
    app_version TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX epr_endpoints_app_version ON epr_endpoints (app_version);

-- One endpoint may own several tokens; a token identifies exactly one endpoint.
-- token_id is the stable handle that 16/ECAP revocation events carry instead of the secret.
CREATE TABLE epr_endpoint_tokens (
    token       TEXT   NOT NULL PRIMARY KEY,
    token_id    TEXT   NOT NULL UNIQUE,
    endpoint_id TEXT   NOT NULL REFERENCES epr_endpoints (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL
);

CREATE INDEX epr_endpoint_tokens_endpoint ON epr_endpoint_tokens (endpoint_id);

-- One JSON object per endpoint, stored as text; version increases by one on every write
-- and is exposed as the ETag for conditional updates.
CREATE TABLE epr_metadata (
    endpoint_id TEXT   NOT NULL PRIMARY KEY REFERENCES epr_endpoints (id) ON DELETE CASCADE,
    body        TEXT   NOT NULL,
    version     BIGINT NOT NULL
);
