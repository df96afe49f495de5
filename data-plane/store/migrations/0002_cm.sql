-- CM (credential service): endpoint tokens and client credentials. Endpoint tokens move here
-- from EPR, which keeps only endpoints and metadata (no deployment holds EPR tokens yet, so
-- they are dropped rather than copied: their values were stored in clear, CM stores hashes).
-- Portable SQL as in 0001: TEXT/BIGINT only; timestamps are Unix milliseconds.

DROP TABLE epr_endpoint_tokens;

-- A token is never stored, only the SHA-256 of its value (lowercase hex). Tokens are at least
-- 128-bit random or chosen by the operator, and the hash is what lookups compare, so a leaked
-- table reveals no usable token. id is the opaque handle 16/ECAP responses and revocation
-- events carry. status: Inactive | Active | Suspended | Revoked.
CREATE TABLE cm_endpoint_tokens (
    id          TEXT   NOT NULL PRIMARY KEY,
    token_hash  TEXT   NOT NULL UNIQUE,
    endpoint_id TEXT   NOT NULL,
    app_name    TEXT   NOT NULL,
    app_version TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX cm_endpoint_tokens_endpoint ON cm_endpoint_tokens (endpoint_id);

-- One row per way a client may authenticate. kind = password: username (unique) and an argon2id
-- PHC string; kind = certificate: issuer (RFC 4514 string) and serial (base 10), unique together.
-- The columns of the other kind are NULL (several NULLs never collide in a UNIQUE constraint, on
-- SQLite or PostgreSQL). status: Active | Revoked.
CREATE TABLE cm_client_credentials (
    id            TEXT   NOT NULL PRIMARY KEY,
    client_id     TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    username      TEXT   UNIQUE,
    password_hash TEXT,
    issuer        TEXT,
    serial        TEXT,
    status        TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (issuer, serial)
);

CREATE INDEX cm_client_credentials_client ON cm_client_credentials (client_id);
