-- Process managers (package saga): per (saga, partition) the fencing token
-- and checkpoint; per instance its state, outbox, deadlines and the
-- records held back behind a parked instance. See pgstore.SagaStore.

CREATE TABLE {{schema}}.saga_partitions (
    saga       text COLLATE "C" NOT NULL,
    partition  int NOT NULL,
    -- The highest fencing token that claimed the partition: every write
    -- of the runner must carry it.
    token      bigint NOT NULL DEFAULT 0,
    pos_tx     bigint NOT NULL DEFAULT 0,
    pos_seq    bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga, partition));

CREATE TABLE {{schema}}.saga_instances (
    saga       text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    partition  int NOT NULL,
    status     text NOT NULL,
    done       boolean NOT NULL DEFAULT false,
    state      bytea,
    version    bigint NOT NULL,
    last_tx    bigint NOT NULL DEFAULT 0,
    last_seq   bigint NOT NULL DEFAULT 0,
    park       bytea, -- JSON of saga.Park, NULL when not parked
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga, id));

CREATE INDEX saga_instances_status ON {{schema}}.saga_instances (saga, status, id);
CREATE INDEX saga_instances_partition ON {{schema}}.saga_instances (saga, partition, id);

CREATE TABLE {{schema}}.saga_commands (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga         text COLLATE "C" NOT NULL,
    instance     text COLLATE "C" NOT NULL,
    command_id   uuid NOT NULL,
    type         text NOT NULL,
    data         bytea NOT NULL,
    metadata     bytea,
    attempts     int NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL,
    last_error   text NOT NULL DEFAULT '',
    FOREIGN KEY (saga, instance) REFERENCES {{schema}}.saga_instances (saga, id) ON DELETE CASCADE);

CREATE INDEX saga_commands_instance ON {{schema}}.saga_commands (saga, instance, seq);

CREATE TABLE {{schema}}.saga_deadlines (
    saga     text COLLATE "C" NOT NULL,
    instance text COLLATE "C" NOT NULL,
    name     text COLLATE "C" NOT NULL,
    id       uuid NOT NULL,
    due      timestamptz NOT NULL,
    PRIMARY KEY (saga, instance, name),
    FOREIGN KEY (saga, instance) REFERENCES {{schema}}.saga_instances (saga, id) ON DELETE CASCADE);

CREATE INDEX saga_deadlines_due ON {{schema}}.saga_deadlines (saga, due);

CREATE TABLE {{schema}}.saga_held (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga     text COLLATE "C" NOT NULL,
    instance text COLLATE "C" NOT NULL,
    record   bytea NOT NULL, -- JSON of eventstore.Record
    FOREIGN KEY (saga, instance) REFERENCES {{schema}}.saga_instances (saga, id) ON DELETE CASCADE);

CREATE INDEX saga_held_instance ON {{schema}}.saga_held (saga, instance, seq);
