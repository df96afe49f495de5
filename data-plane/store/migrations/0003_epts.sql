-- EPTS (endpoint time series): one row per data point. Portable SQL as in 0001: TEXT/BIGINT
-- only; timestamps are Unix milliseconds.
--
-- No uniqueness: two points of one series and endpoint may share a timestamp (a batch of samples
-- without their own time all get the receive time) and both are kept; `seq` (the point's place
-- in its batch) orders them. point_values is a JSON object, value name -> value.
CREATE TABLE epts_points (
    app_name     TEXT   NOT NULL,
    series       TEXT   NOT NULL,
    endpoint_id  TEXT   NOT NULL,
    ts           BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    ingested_at  BIGINT NOT NULL,
    point_values TEXT   NOT NULL
);

-- Queries: one application's series, optionally one endpoint, over a time range.
CREATE INDEX epts_points_series ON epts_points (app_name, series, endpoint_id, ts);
-- Retention: an application's oldest points.
CREATE INDEX epts_points_age ON epts_points (app_name, ts);
