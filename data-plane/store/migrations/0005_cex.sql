-- CEX (11/CEP commands): every command sent to an endpoint, its delivery and its result.
-- Portable SQL as in 0001: TEXT/BIGINT only; timestamps are Unix milliseconds.

-- id counts from 1 per (instance, endpoint, command type): the device answers with it. payload
-- and result_payload are JSON text (NULL: none). A command is outstanding until it has a result
-- (completed_at) or expires_at has passed.
CREATE TABLE cex_commands (
    instance       TEXT   NOT NULL,
    endpoint_id    TEXT   NOT NULL,
    command_type   TEXT   NOT NULL,
    id             BIGINT NOT NULL,
    payload        TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    delivered_at   BIGINT,
    completed_at   BIGINT,
    status_code    BIGINT,
    reason_phrase  TEXT,
    result_payload TEXT,
    PRIMARY KEY (instance, endpoint_id, command_type, id)
);

CREATE INDEX cex_commands_outstanding ON cex_commands (instance, endpoint_id, completed_at, expires_at);
