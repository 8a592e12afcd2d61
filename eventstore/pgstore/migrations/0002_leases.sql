-- Leases: single-leader work with an expiry and a fencing token (package
-- lease; Store.Leases). One row per lease name, kept after release and
-- expiry so that its token only ever grows: an acquisition sets
-- token = token + 1. Expiry is judged by the server's clock
-- (clock_timestamp()); a row whose expires_at has passed is free.
CREATE TABLE {{schema}}.leases (
    name        text        COLLATE "C" PRIMARY KEY,
    holder      text        NOT NULL,
    token       bigint      NOT NULL CHECK (token > 0),
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL
);
