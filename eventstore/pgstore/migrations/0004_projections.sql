-- Projections kept in PostgreSQL (projection.Postgres): the runners'
-- bookkeeping. projection_state holds small field/value records by key
-- (the same keys as on Redis: the registry, each projection's meta and
-- last error, and per partition and namespace version its checkpoint,
-- stream versions and parked records); a batch's read-model writes and
-- its bookkeeping commit in one transaction. The read models themselves
-- live in a schema per namespace version, made by the projection.
CREATE TABLE {{schema}}.projection_state (
    k text COLLATE "C" NOT NULL,
    f text COLLATE "C" NOT NULL,
    v text NOT NULL,
    PRIMARY KEY (k, f));

-- The runners serving each projection, for balancing partitions.
CREATE TABLE {{schema}}.projection_runners (
    k          text COLLATE "C" NOT NULL,
    runner     text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (k, runner));

-- Control requests to the runner of a partition, and their replies.
CREATE TABLE {{schema}}.projection_control (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    k          text COLLATE "C" NOT NULL,
    body       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());

CREATE INDEX projection_control_k ON {{schema}}.projection_control (k, seq);
