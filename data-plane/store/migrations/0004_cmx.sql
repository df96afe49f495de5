-- CMX (7/CMP configuration): configuration documents and what endpoints did with them.
-- Portable SQL as in 0001: TEXT/BIGINT only; timestamps are Unix milliseconds.

-- One document per configuration name (one per CMX instance), application version and endpoint;
-- endpoint_id '' is the application version's default (no NULL in a primary key). config_id is
-- derived from the content, so the same document always has the same id. body is JSON text.
CREATE TABLE cmx_configs (
    config_name TEXT   NOT NULL,
    app_version TEXT   NOT NULL,
    endpoint_id TEXT   NOT NULL,
    config_id   TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (config_name, app_version, endpoint_id)
);

-- Per configuration name and endpoint: the configuration last sent to it and the last one it
-- reported applied (with the status it reported; applied_config_id may be an id never issued).
CREATE TABLE cmx_statuses (
    config_name           TEXT   NOT NULL,
    endpoint_id           TEXT   NOT NULL,
    app_version           TEXT   NOT NULL,
    dispatched_config_id  TEXT,
    dispatched_at         BIGINT,
    applied_config_id     TEXT,
    applied_at            BIGINT,
    status_code           BIGINT,
    reason_phrase         TEXT,
    PRIMARY KEY (config_name, endpoint_id)
);
