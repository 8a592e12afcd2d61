-- Events, the global feed, snapshots and checkpoints.
--
-- {{schema}} is the quoted schema name and {{schema_literal}} the same name
-- as a string literal; the migrator substitutes both.

CREATE SEQUENCE {{schema}}.events_seq AS bigint;

-- One row per event. (tx, seq) is the feed order: tx is the writing
-- transaction's ID (pg_current_xact_id()), seq a store-wide sequence number.
-- The feed only shows rows whose tx is below the oldest transaction still
-- running, so nothing can ever appear behind a reader.
CREATE TABLE {{schema}}.events (
    tx          bigint      NOT NULL,
    seq         bigint      NOT NULL DEFAULT nextval('{{schema}}.events_seq'),
    id          uuid        NOT NULL,
    stream_id   text        COLLATE "C" NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    event_type  text        NOT NULL,
    data        bytea       NOT NULL,
    metadata    bytea,       -- JSON object of string values, or NULL
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (tx, seq),
    CONSTRAINT events_id_key UNIQUE (id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

ALTER SEQUENCE {{schema}}.events_seq OWNED BY {{schema}}.events.seq;

CREATE TABLE {{schema}}.snapshots (
    stream_id text PRIMARY KEY,
    version bigint NOT NULL,
    schema_version int NOT NULL,
    state bytea NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now());

CREATE TABLE {{schema}}.checkpoints (
    name text PRIMARY KEY,
    pos_tx bigint NOT NULL DEFAULT 0,
    pos_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now());

-- append_events appends to several streams in one call (one round trip);
-- the store uses it for multi-stream appends and for AppendTx, while a
-- single-stream append on the pool takes the same lock (same key) and runs
-- one guarded INSERT instead (see single.go):
--   1. takes a transaction-level advisory lock on every stream, in key order,
--      before any write (advisory locks assign no transaction ID, so the next
--      writer of a stream always gets a larger one);
--   2. returns the stored copies of any event ID already present (kind 2),
--      writing nothing: the caller tells an idempotent repeat from a clash;
--   3. checks every expected version (kind 1 on a mismatch) and, when the
--      transaction already holds an ID older than a stream's last event,
--      refuses (kind 3) so that the feed keeps per-stream order;
--   4. inserts the events and returns each stream's new version (kind 0).
-- Events arrive flattened: p_ev_stream is the 1-based index of each event's
-- stream in p_streams and p_ev_offset its 1-based place within that stream.
-- Expected versions: -1 any, -2 the stream exists, n >= 0 exactly n.
CREATE FUNCTION {{schema}}.append_events(
    p_streams   text[],
    p_expected  bigint[],
    p_ev_stream int[],
    p_ev_offset int[],
    p_ids       uuid[],
    p_types     text[],
    p_data      bytea[],
    p_metadata  bytea[])
RETURNS TABLE (r_kind smallint, r_stream text, r_id uuid, r_version bigint, r_tx bigint, r_seq bigint)
LANGUAGE plpgsql
-- Every lookup here is an index probe. Each session caches the function's
-- plans; one planned while the table was small would scan the whole table
-- for ever after as it grows.
SET enable_seqscan = off
AS $fn$
DECLARE
    n      int := cardinality(p_streams);
    cur    bigint[] := array_fill(0::bigint, ARRAY[n]);
    k      bigint;
    v      bigint;
    t      bigint;
    my_tx  bigint;
    i      int;
BEGIN
    FOR k IN
        SELECT DISTINCT hashtextextended({{schema_literal}} || '/' || s, 0)
        FROM unnest(p_streams) AS s ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;

    RETURN QUERY
        SELECT 2::smallint, e.stream_id, e.id, e.version, e.tx, e.seq
        FROM {{schema}}.events e WHERE e.id = ANY (p_ids);
    IF FOUND THEN
        RETURN;
    END IF;

    my_tx := pg_current_xact_id_if_assigned()::text::bigint;
    FOR i IN 1 .. n LOOP
        SELECT e.version, e.tx INTO v, t
        FROM {{schema}}.events e
        WHERE e.stream_id = p_streams[i]
        ORDER BY e.version DESC LIMIT 1;
        IF NOT FOUND THEN
            v := 0;
            t := NULL;
        END IF;
        IF NOT (p_expected[i] = -1
                OR (p_expected[i] = -2 AND v > 0)
                OR p_expected[i] = v) THEN
            RETURN QUERY SELECT 1::smallint, p_streams[i], NULL::uuid, v, t, NULL::bigint;
            RETURN;
        END IF;
        IF my_tx IS NOT NULL AND t IS NOT NULL AND my_tx < t THEN
            RETURN QUERY SELECT 3::smallint, p_streams[i], NULL::uuid, v, t, my_tx;
            RETURN;
        END IF;
        cur[i] := v;
    END LOOP;

    my_tx := pg_current_xact_id()::text::bigint;
    RETURN QUERY
        WITH ins AS (
            INSERT INTO {{schema}}.events (tx, id, stream_id, version, event_type, data, metadata)
            SELECT my_tx, u.id, p_streams[u.si], cur[u.si] + u.off, u.typ, u.dat, u.md
            FROM unnest(p_ev_stream, p_ev_offset, p_ids, p_types, p_data, p_metadata)
                 WITH ORDINALITY AS u(si, off, id, typ, dat, md, ord)
            ORDER BY u.ord
            RETURNING events.stream_id, events.version, events.seq
        )
        SELECT 0::smallint, ins.stream_id, NULL::uuid, max(ins.version), my_tx, max(ins.seq)
        FROM ins GROUP BY ins.stream_id;
END
$fn$;
