-- EPR: the endpoint list in the order it is paged (the dashboard's list at 10k endpoints).
-- Walking this index gives a version's endpoints oldest first, so a page needs no sort of the
-- whole version, and counting a version's endpoints reads the index only. It covers what the
-- per-version index of 0001 did.
CREATE INDEX epr_endpoints_version_created ON epr_endpoints (app_version, created_at, id);

DROP INDEX epr_endpoints_app_version;
