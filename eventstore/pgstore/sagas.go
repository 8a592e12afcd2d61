package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/saga"
)

// SagaStore is the PostgreSQL saga.Store, in the tables of migration
// 0003_sagas next to the events. A runner's commit is one transaction:
// it locks the partition's row (saga_partitions), checks that the commit's
// fencing token is the one that last claimed the partition, and writes the
// instances, outboxes, deadlines, held records and checkpoint; a deposed
// runner's commit is refused (*saga.FencedError) and changes nothing.
// Claim raises the partition's token under the same row lock, so a claim
// and a commit never interleave. It is safe for concurrent use.
type SagaStore struct {
	pool *pgxpool.Pool
	t    sagaTables
}

type sagaTables struct{ partitions, instances, commands, deadlines, held string }

var _ saga.Store = (*SagaStore)(nil)

// NewSagaStore returns the saga store of the event store in schema (which
// Migrate must have brought up to date).
func NewSagaStore(pool *pgxpool.Pool, schema string) (*SagaStore, error) {
	if pool == nil {
		return nil, &eventstore.InvalidArgumentError{Field: "pool", Reason: "nil"}
	}
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	q := quoteIdent(schema) + "."
	return &SagaStore{pool: pool, t: sagaTables{
		partitions: q + "saga_partitions", instances: q + "saga_instances", commands: q + "saga_commands",
		deadlines: q + "saga_deadlines", held: q + "saga_held",
	}}, nil
}

// sagaIdleTimeout bounds how long a write transaction of the store may sit
// idle, waiting for its client: a runner frozen (SIGSTOP, a long pause) or
// cut off from the database in the middle of one holds the partition's
// row lock for that long at most — the server then ends its session, the
// transaction rolls back, and a standby that took the lease can claim the
// partition. Between its statements a runner's transaction is busy, not
// idle, for far less.
const sagaIdleTimeout = time.Second

// writeTx runs fn in a transaction bounded by sagaIdleTimeout.
func (s *SagaStore) writeTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`,
			strconv.FormatInt(sagaIdleTimeout.Milliseconds(), 10)); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (s *SagaStore) sql(text string) string {
	return strings.NewReplacer(
		"{partitions}", s.t.partitions, "{instances}", s.t.instances, "{commands}", s.t.commands,
		"{deadlines}", s.t.deadlines, "{held}", s.t.held,
	).Replace(text)
}

func sagaErr(what string, err error) error {
	var fe *saga.FencedError
	var ce *saga.ConflictError
	var ie *saga.InvalidError
	if errors.As(err, &fe) || errors.As(err, &ce) || errors.As(err, &ie) || errors.Is(err, saga.ErrNotFound) || errors.Is(err, saga.ErrNotParked) {
		return err
	}
	return fmt.Errorf("pgstore: sagas: %s: %w", what, err)
}

// Claim implements saga.Store.
func (s *SagaStore) Claim(ctx context.Context, f saga.Fence) (saga.Claimed, error) {
	if err := saga.ValidateClaim(f); err != nil {
		return saga.Claimed{}, err
	}
	var c saga.Claimed
	var tok, ptx, pseq int64
	err := s.pool.QueryRow(ctx, s.sql(`INSERT INTO {partitions} AS p (saga, partition, token) VALUES ($1, $2, CASE WHEN $3::bigint = 0 THEN 1 ELSE $3::bigint END)
		ON CONFLICT (saga, partition) DO UPDATE SET token = CASE WHEN $3::bigint = 0 THEN p.token + 1 ELSE $3::bigint END, updated_at = now()
		WHERE $3::bigint = 0 OR p.token <= $3::bigint
		RETURNING token, pos_tx, pos_seq`), f.Saga, f.Partition, int64(f.Token)).Scan(&tok, &ptx, &pseq)
	if errors.Is(err, pgx.ErrNoRows) {
		var cur int64
		if err := s.pool.QueryRow(ctx, s.sql(`SELECT token FROM {partitions} WHERE saga = $1 AND partition = $2`), f.Saga, f.Partition).Scan(&cur); err != nil {
			return saga.Claimed{}, sagaErr("claim", err)
		}
		return saga.Claimed{}, &saga.FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token, Current: uint64(cur)}
	}
	if err != nil {
		return saga.Claimed{}, sagaErr("claim", err)
	}
	c.Token, c.Checkpoint = uint64(tok), eventstore.Position{Tx: uint64(ptx), Seq: uint64(pseq)}
	return c, nil
}

// fence checks f's token inside tx, locking the partition's row (FOR
// UPDATE when the transaction writes the checkpoint, FOR SHARE
// otherwise), and returns the checkpoint.
func (s *SagaStore) fence(ctx context.Context, tx pgx.Tx, f saga.Fence, exclusive bool) (eventstore.Position, error) {
	lock := "FOR SHARE"
	if exclusive {
		lock = "FOR UPDATE"
	}
	var tok, ptx, pseq int64
	err := tx.QueryRow(ctx, s.sql(`SELECT token, pos_tx, pos_seq FROM {partitions} WHERE saga = $1 AND partition = $2 `+lock), f.Saga, f.Partition).Scan(&tok, &ptx, &pseq)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Position{}, &saga.FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token}
	}
	if err != nil {
		return eventstore.Position{}, err
	}
	if uint64(tok) != f.Token {
		return eventstore.Position{}, &saga.FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token, Current: uint64(tok)}
	}
	return eventstore.Position{Tx: uint64(ptx), Seq: uint64(pseq)}, nil
}

// fenceRead checks f's token without a transaction, for the partition's
// reads.
func (s *SagaStore) fenceRead(ctx context.Context, f saga.Fence) error {
	if err := saga.ValidateFence(f); err != nil {
		return err
	}
	var tok int64
	err := s.pool.QueryRow(ctx, s.sql(`SELECT token FROM {partitions} WHERE saga = $1 AND partition = $2`), f.Saga, f.Partition).Scan(&tok)
	if errors.Is(err, pgx.ErrNoRows) {
		return &saga.FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token}
	}
	if err != nil {
		return sagaErr("check the fence", err)
	}
	if uint64(tok) != f.Token {
		return &saga.FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token, Current: uint64(tok)}
	}
	return nil
}

const statusSQL = `UPDATE {instances} i SET status = CASE
		WHEN i.park IS NOT NULL THEN 'parked'
		WHEN i.done THEN 'done'
		WHEN EXISTS (SELECT 1 FROM {deadlines} d WHERE d.saga = i.saga AND d.instance = i.id) THEN 'waiting'
		ELSE 'running' END
	WHERE i.saga = $1 AND i.id = $2`

// Commit implements saga.Store.
func (s *SagaStore) Commit(ctx context.Context, c saga.Commit) error {
	if err := saga.ValidateCommit(c); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, u := range c.Updates {
		if seen[u.ID] {
			return &saga.InvalidError{Field: "commit", Value: u.ID, Reason: "updates the instance twice"}
		}
		seen[u.ID] = true
	}
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		cp, err := s.fence(ctx, tx, c.Fence, !c.Checkpoint.IsZero())
		if err != nil {
			return err
		}
		if !c.Checkpoint.IsZero() && c.Checkpoint.Before(cp) {
			return &saga.InvalidError{Field: "checkpoint", Value: c.Checkpoint.String(), Reason: "before the stored " + cp.String()}
		}
		for _, u := range c.Updates {
			if err := s.update(ctx, tx, c.Fence, c.Now, u); err != nil {
				return err
			}
		}
		if !c.Checkpoint.IsZero() {
			if _, err := tx.Exec(ctx, s.sql(`UPDATE {partitions} SET pos_tx = $3, pos_seq = $4, updated_at = now() WHERE saga = $1 AND partition = $2`),
				c.Fence.Saga, c.Fence.Partition, int64(c.Checkpoint.Tx), int64(c.Checkpoint.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return sagaErr("commit", err)
	}
	return nil
}

func (s *SagaStore) update(ctx context.Context, tx pgx.Tx, f saga.Fence, now time.Time, u saga.Update) error {
	var version int64
	var partition int
	err := tx.QueryRow(ctx, s.sql(`SELECT version, partition FROM {instances} WHERE saga = $1 AND id = $2 FOR UPDATE`), f.Saga, u.ID).Scan(&version, &partition)
	found := err == nil
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if u.Partition != f.Partition {
			return &saga.InvalidError{Field: "instance", Value: u.ID, Reason: fmt.Sprintf("new in partition %d under a fence of partition %d", u.Partition, f.Partition)}
		}
	case err != nil:
		return err
	case partition != f.Partition:
		return &saga.InvalidError{Field: "instance", Value: u.ID, Reason: fmt.Sprintf("belongs to partition %d, not %d", partition, f.Partition)}
	}
	if version != u.Version {
		return &saga.ConflictError{Saga: f.Saga, ID: u.ID, Reason: fmt.Sprintf("version %d, loaded at %d", version, u.Version)}
	}
	var park []byte
	if u.Park != nil {
		if park, err = json.Marshal(u.Park); err != nil {
			return err
		}
	}
	if !found {
		_, err = tx.Exec(ctx, s.sql(`INSERT INTO {instances} (saga, id, partition, status, done, state, version, last_tx, last_seq, park)
			VALUES ($1, $2, $3, 'running', $4, $5, 1, $6, $7, $8)`),
			f.Saga, u.ID, u.Partition, u.Complete, u.State, int64(u.LastPosition.Tx), int64(u.LastPosition.Seq), park)
	} else {
		_, err = tx.Exec(ctx, s.sql(`UPDATE {instances} SET version = version + 1, updated_at = now(),
				state = COALESCE($3, state),
				done = done OR $4,
				last_tx = CASE WHEN ($5::bigint, $6::bigint) > (last_tx, last_seq) THEN $5 ELSE last_tx END,
				last_seq = CASE WHEN ($5::bigint, $6::bigint) > (last_tx, last_seq) THEN $6 ELSE last_seq END,
				park = CASE WHEN $7::bytea IS NOT NULL THEN $7 WHEN $8 THEN NULL ELSE park END
			WHERE saga = $1 AND id = $2`),
			f.Saga, u.ID, u.State, u.Complete, int64(u.LastPosition.Tx), int64(u.LastPosition.Seq), park, u.Unpark)
	}
	if err != nil {
		return err
	}
	if u.Fired != nil {
		tag, err := tx.Exec(ctx, s.sql(`DELETE FROM {deadlines} WHERE saga = $1 AND instance = $2 AND name = $3 AND id = $4`), f.Saga, u.ID, u.Fired.Name, u.Fired.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return &saga.ConflictError{Saga: f.Saga, ID: u.ID, Reason: fmt.Sprintf("deadline %q (%s) is no longer pending", u.Fired.Name, u.Fired.ID)}
		}
	}
	if len(u.Cancel) > 0 {
		if _, err := tx.Exec(ctx, s.sql(`DELETE FROM {deadlines} WHERE saga = $1 AND instance = $2 AND name = ANY($3)`), f.Saga, u.ID, u.Cancel); err != nil {
			return err
		}
	}
	if len(u.Schedule) > 0 {
		names, ids, dues := make([]string, len(u.Schedule)), make([]uuid.UUID, len(u.Schedule)), make([]time.Time, len(u.Schedule))
		for i, d := range u.Schedule {
			names[i], ids[i], dues[i] = d.Name, d.ID, d.Due
		}
		if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {deadlines} (saga, instance, name, id, due)
				SELECT $1, $2, n, i, d FROM unnest($3::text[], $4::uuid[], $5::timestamptz[]) AS u(n, i, d)
				ON CONFLICT (saga, instance, name) DO UPDATE SET id = EXCLUDED.id, due = EXCLUDED.due`),
			f.Saga, u.ID, names, ids, dues); err != nil {
			return err
		}
	}
	if u.Complete {
		if _, err := tx.Exec(ctx, s.sql(`DELETE FROM {deadlines} WHERE saga = $1 AND instance = $2`), f.Saga, u.ID); err != nil {
			return err
		}
	}
	if u.Sent != 0 {
		if _, err := tx.Exec(ctx, s.sql(`DELETE FROM {commands} WHERE saga = $1 AND instance = $2 AND seq = $3`), f.Saga, u.ID, u.Sent); err != nil {
			return err
		}
	}
	if len(u.Enqueue) > 0 {
		n := len(u.Enqueue)
		ids, types, datas, mds, nexts := make([]uuid.UUID, n), make([]string, n), make([][]byte, n), make([][]byte, n), make([]*time.Time, n)
		for i, c := range u.Enqueue {
			ids[i], types[i], datas[i] = c.ID, c.Type, c.Data
			if datas[i] == nil {
				datas[i] = []byte{}
			}
			if c.Metadata != nil {
				if mds[i], err = json.Marshal(c.Metadata); err != nil {
					return err
				}
			}
			if t := c.NextAttempt; !t.IsZero() {
				nexts[i] = &t
			} else if !now.IsZero() {
				nexts[i] = &now
			}
		}
		if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {commands} (saga, instance, command_id, type, data, metadata, next_attempt)
				SELECT $1, $2, i, t, d, m, COALESCE(n, now()) FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::bytea[], $7::timestamptz[]) WITH ORDINALITY AS u(i, t, d, m, n, o)
				ORDER BY o`),
			f.Saga, u.ID, ids, types, datas, mds, nexts); err != nil {
			return err
		}
	}
	if u.Unhold != 0 {
		if _, err := tx.Exec(ctx, s.sql(`DELETE FROM {held} WHERE saga = $1 AND instance = $2 AND seq = $3`), f.Saga, u.ID, u.Unhold); err != nil {
			return err
		}
	}
	if len(u.Hold) > 0 {
		recs := make([][]byte, len(u.Hold))
		for i, r := range u.Hold {
			if recs[i], err = json.Marshal(r); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {held} (saga, instance, record)
				SELECT $1, $2, r FROM unnest($3::bytea[]) WITH ORDINALITY AS u(r, o) ORDER BY o`), f.Saga, u.ID, recs); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, s.sql(statusSQL), f.Saga, u.ID)
	return err
}

const instanceCols = `saga, id, partition, status, done, state, version, last_tx, last_seq, park, created_at, updated_at`

func scanInstance(row pgx.Row) (saga.Instance, error) {
	var (
		in        saga.Instance
		status    string
		ltx, lseq int64
		park      []byte
	)
	if err := row.Scan(&in.Saga, &in.ID, &in.Partition, &status, &in.Done, &in.State, &in.Version, &ltx, &lseq, &park, &in.CreatedAt, &in.UpdatedAt); err != nil {
		return saga.Instance{}, err
	}
	in.Status = saga.Status(status)
	in.LastPosition = eventstore.Position{Tx: uint64(ltx), Seq: uint64(lseq)}
	if park != nil {
		in.Park = &saga.Park{}
		if err := json.Unmarshal(park, in.Park); err != nil {
			return saga.Instance{}, fmt.Errorf("decode the park of %q: %w", in.ID, err)
		}
	}
	return in, nil
}

// details fills in the instance's deadlines and held count, and with all
// set its commands and held records.
func (s *SagaStore) details(ctx context.Context, q pgx.Tx, in *saga.Instance, all bool) error {
	rows, err := q.Query(ctx, s.sql(`SELECT name, id, due FROM {deadlines} WHERE saga = $1 AND instance = $2 ORDER BY due, name`), in.Saga, in.ID)
	if err != nil {
		return err
	}
	in.Deadlines, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.Deadline, error) {
		var d saga.Deadline
		err := r.Scan(&d.Name, &d.ID, &d.Due)
		d.Due = d.Due.UTC()
		return d, err
	})
	if err != nil {
		return err
	}
	if !all {
		return q.QueryRow(ctx, s.sql(`SELECT count(*) FROM {held} WHERE saga = $1 AND instance = $2`), in.Saga, in.ID).Scan(&in.Held)
	}
	rows, err = q.Query(ctx, s.sql(`SELECT seq, command_id, type, data, metadata, attempts, next_attempt, last_error FROM {commands} WHERE saga = $1 AND instance = $2 ORDER BY seq`), in.Saga, in.ID)
	if err != nil {
		return err
	}
	in.Commands, err = pgx.CollectRows(rows, scanCommand)
	if err != nil {
		return err
	}
	rows, err = q.Query(ctx, s.sql(`SELECT seq, record FROM {held} WHERE saga = $1 AND instance = $2 ORDER BY seq`), in.Saga, in.ID)
	if err != nil {
		return err
	}
	in.HeldRecords, err = pgx.CollectRows(rows, scanHeld)
	in.Held = len(in.HeldRecords)
	return err
}

func scanCommand(r pgx.CollectableRow) (saga.Command, error) {
	var (
		c  saga.Command
		md []byte
	)
	if err := r.Scan(&c.Seq, &c.ID, &c.Type, &c.Data, &md, &c.Attempts, &c.NextAttempt, &c.LastError); err != nil {
		return c, err
	}
	c.NextAttempt = c.NextAttempt.UTC()
	if md != nil {
		if err := json.Unmarshal(md, &c.Metadata); err != nil {
			return c, fmt.Errorf("decode the metadata of command %s: %w", c.ID, err)
		}
	}
	return c, nil
}

func scanHeld(r pgx.CollectableRow) (saga.HeldRecord, error) {
	var (
		h   saga.HeldRecord
		raw []byte
	)
	if err := r.Scan(&h.Seq, &raw); err != nil {
		return h, err
	}
	if err := json.Unmarshal(raw, &h.Record); err != nil {
		return h, fmt.Errorf("decode held record %d: %w", h.Seq, err)
	}
	return h, nil
}

// read runs fn in a read-only REPEATABLE READ transaction, so that an
// instance and its details are one snapshot.
func (s *SagaStore) read(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

// Load implements saga.Store.
func (s *SagaStore) Load(ctx context.Context, sagaName, id string) (saga.Instance, bool, error) {
	if err := saga.ValidateRef(sagaName, id); err != nil {
		return saga.Instance{}, false, err
	}
	var (
		in    saga.Instance
		found bool
	)
	err := s.read(ctx, func(tx pgx.Tx) error {
		var err error
		in, err = scanInstance(tx.QueryRow(ctx, s.sql(`SELECT `+instanceCols+` FROM {instances} WHERE saga = $1 AND id = $2`), sagaName, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return s.details(ctx, tx, &in, false)
	})
	if err != nil {
		return saga.Instance{}, false, sagaErr("load "+id, err)
	}
	return in, found, nil
}

// Get implements saga.Store.
func (s *SagaStore) Get(ctx context.Context, sagaName, id string) (saga.Instance, error) {
	if err := saga.ValidateRef(sagaName, id); err != nil {
		return saga.Instance{}, err
	}
	var in saga.Instance
	err := s.read(ctx, func(tx pgx.Tx) error {
		var err error
		in, err = scanInstance(tx.QueryRow(ctx, s.sql(`SELECT `+instanceCols+` FROM {instances} WHERE saga = $1 AND id = $2`), sagaName, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: saga %q instance %q", saga.ErrNotFound, sagaName, id)
		}
		if err != nil {
			return err
		}
		return s.details(ctx, tx, &in, true)
	})
	if err != nil {
		return saga.Instance{}, sagaErr("get "+id, err)
	}
	return in, nil
}

// DueCommands implements saga.Store.
func (s *SagaStore) DueCommands(ctx context.Context, f saga.Fence, now time.Time, limit int) ([]saga.DueCommand, error) {
	if err := s.fenceRead(ctx, f); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT instance, seq, command_id, type, data, metadata, attempts, next_attempt, last_error FROM (
			SELECT DISTINCT ON (c.instance) c.*
			FROM {commands} c JOIN {instances} i ON i.saga = c.saga AND i.id = c.instance
			WHERE c.saga = $1 AND i.partition = $2 AND i.park IS NULL
			ORDER BY c.instance, c.seq) h
		WHERE next_attempt <= $3 ORDER BY next_attempt, seq LIMIT $4`), f.Saga, f.Partition, now, limitOf(limit))
	if err != nil {
		return nil, sagaErr("due commands", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.DueCommand, error) {
		var (
			d  saga.DueCommand
			md []byte
		)
		c := &d.Command
		if err := r.Scan(&d.Instance, &c.Seq, &c.ID, &c.Type, &c.Data, &md, &c.Attempts, &c.NextAttempt, &c.LastError); err != nil {
			return d, err
		}
		c.NextAttempt = c.NextAttempt.UTC()
		if md != nil {
			if err := json.Unmarshal(md, &c.Metadata); err != nil {
				return d, err
			}
		}
		return d, nil
	})
	if err != nil {
		return nil, sagaErr("due commands", err)
	}
	return out, nil
}

func limitOf(n int) int {
	if n <= 0 {
		return 1000
	}
	return n
}

// Sent implements saga.Store.
func (s *SagaStore) Sent(ctx context.Context, f saga.Fence, id string, seq int64) error {
	if err := saga.ValidateFence(f); err != nil {
		return err
	}
	if err := saga.ValidateInstanceID(id); err != nil {
		return err
	}
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		if _, err := s.fence(ctx, tx, f, false); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, s.sql(`DELETE FROM {commands} WHERE saga = $1 AND instance = $2 AND seq = $3`), f.Saga, id, seq)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = tx.Exec(ctx, s.sql(`UPDATE {instances} SET version = version + 1, updated_at = now() WHERE saga = $1 AND id = $2`), f.Saga, id)
		return err
	})
	if err != nil {
		return sagaErr("sent", err)
	}
	return nil
}

// Failed implements saga.Store.
func (s *SagaStore) Failed(ctx context.Context, f saga.Fence, id string, cmd saga.Command, park bool) error {
	if err := saga.ValidateFence(f); err != nil {
		return err
	}
	if err := saga.ValidateInstanceID(id); err != nil {
		return err
	}
	var parkJSON []byte
	if park {
		var err error
		parkJSON, err = json.Marshal(saga.Park{Kind: saga.ParkCommand, Ref: cmd.ID.String(), Error: cmd.LastError, Attempts: cmd.Attempts})
		if err != nil {
			return err
		}
	}
	next := cmd.NextAttempt
	if next.IsZero() {
		next = time.Now()
	}
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		if _, err := s.fence(ctx, tx, f, false); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, s.sql(`UPDATE {commands} SET attempts = $4, next_attempt = $5, last_error = $6 WHERE saga = $1 AND instance = $2 AND seq = $3`),
			f.Saga, id, cmd.Seq, cmd.Attempts, next, cmd.LastError)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql(`UPDATE {instances} SET version = version + 1, updated_at = now(), park = COALESCE($3, park) WHERE saga = $1 AND id = $2`), f.Saga, id, parkJSON); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, s.sql(statusSQL), f.Saga, id)
		return err
	})
	if err != nil {
		return sagaErr("failed", err)
	}
	return nil
}

// DueDeadlines implements saga.Store.
func (s *SagaStore) DueDeadlines(ctx context.Context, f saga.Fence, horizon time.Time, limit int) ([]saga.DueDeadline, error) {
	if err := s.fenceRead(ctx, f); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT d.instance, d.name, d.id, d.due
		FROM {deadlines} d JOIN {instances} i ON i.saga = d.saga AND i.id = d.instance
		WHERE d.saga = $1 AND i.partition = $2 AND i.park IS NULL AND d.due <= $3
		  AND NOT EXISTS (SELECT 1 FROM {held} h WHERE h.saga = d.saga AND h.instance = d.instance)
		ORDER BY d.due, d.instance, d.name LIMIT $4`), f.Saga, f.Partition, horizon, limitOf(limit))
	if err != nil {
		return nil, sagaErr("due deadlines", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.DueDeadline, error) {
		var d saga.DueDeadline
		err := r.Scan(&d.Instance, &d.Deadline.Name, &d.Deadline.ID, &d.Deadline.Due)
		d.Deadline.Due = d.Deadline.Due.UTC()
		return d, err
	})
	if err != nil {
		return nil, sagaErr("due deadlines", err)
	}
	return out, nil
}

// DueRecords implements saga.Store.
func (s *SagaStore) DueRecords(ctx context.Context, f saga.Fence, limit int) ([]saga.DueRecord, error) {
	if err := s.fenceRead(ctx, f); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT instance, seq, record FROM (
			SELECT DISTINCT ON (h.instance) h.instance, h.seq, h.record
			FROM {held} h JOIN {instances} i ON i.saga = h.saga AND i.id = h.instance
			WHERE h.saga = $1 AND i.partition = $2 AND i.park IS NULL
			ORDER BY h.instance, h.seq) x
		ORDER BY seq LIMIT $3`), f.Saga, f.Partition, limitOf(limit))
	if err != nil {
		return nil, sagaErr("due records", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.DueRecord, error) {
		var (
			d   saga.DueRecord
			raw []byte
		)
		if err := r.Scan(&d.Instance, &d.Held.Seq, &raw); err != nil {
			return d, err
		}
		return d, json.Unmarshal(raw, &d.Held.Record)
	})
	if err != nil {
		return nil, sagaErr("due records", err)
	}
	return out, nil
}

// NextDue implements saga.Store.
func (s *SagaStore) NextDue(ctx context.Context, f saga.Fence) (time.Time, bool, error) {
	if err := s.fenceRead(ctx, f); err != nil {
		return time.Time{}, false, err
	}
	var next *time.Time
	err := s.pool.QueryRow(ctx, s.sql(`SELECT min(t) FROM (
			SELECT (SELECT c.next_attempt FROM {commands} c WHERE c.saga = i.saga AND c.instance = i.id ORDER BY c.seq LIMIT 1) AS t
			FROM {instances} i WHERE i.saga = $1 AND i.partition = $2 AND i.park IS NULL
			UNION ALL
			SELECT d.due FROM {deadlines} d JOIN {instances} i ON i.saga = d.saga AND i.id = d.instance
			WHERE d.saga = $1 AND i.partition = $2 AND i.park IS NULL
			  AND NOT EXISTS (SELECT 1 FROM {held} h WHERE h.saga = d.saga AND h.instance = d.instance)) x`), f.Saga, f.Partition).Scan(&next)
	if err != nil {
		return time.Time{}, false, sagaErr("next due", err)
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return next.UTC(), true, nil
}

// List implements saga.Store.
func (s *SagaStore) List(ctx context.Context, sagaName string, f saga.Filter) ([]saga.Instance, error) {
	if err := saga.ValidateName(sagaName); err != nil {
		return nil, err
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, &saga.InvalidError{Field: "status", Value: string(f.Status), Reason: "unknown"}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var out []saga.Instance
	err := s.read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.sql(`SELECT `+instanceCols+` FROM {instances}
		WHERE saga = $1 AND ($2 = '' OR status = $2) AND id > $3 ORDER BY id LIMIT $4`), sagaName, string(f.Status), f.After, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.Instance, error) { return scanInstance(r) })
		if err != nil || len(out) == 0 {
			return err
		}
		return s.listDetails(ctx, tx, sagaName, out)
	})
	if err != nil {
		return nil, sagaErr("list", err)
	}
	return out, nil
}

// listDetails fills in the deadlines and held counts of a page of
// instances, in two queries.
func (s *SagaStore) listDetails(ctx context.Context, tx pgx.Tx, sagaName string, page []saga.Instance) error {
	ids := make([]string, len(page))
	at := make(map[string]int, len(page))
	for i, in := range page {
		ids[i], at[in.ID] = in.ID, i
	}
	rows, err := tx.Query(ctx, s.sql(`SELECT instance, name, id, due FROM {deadlines} WHERE saga = $1 AND instance = ANY($2) ORDER BY instance, due, name`), sagaName, ids)
	if err != nil {
		return err
	}
	var (
		inst string
		d    saga.Deadline
	)
	if _, err := pgx.ForEachRow(rows, []any{&inst, &d.Name, &d.ID, &d.Due}, func() error {
		if i, ok := at[inst]; ok {
			d.Due = d.Due.UTC()
			page[i].Deadlines = append(page[i].Deadlines, d)
		}
		return nil
	}); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, s.sql(`SELECT instance, count(*) FROM {held} WHERE saga = $1 AND instance = ANY($2) GROUP BY instance`), sagaName, ids)
	if err != nil {
		return err
	}
	var n int
	_, err = pgx.ForEachRow(rows, []any{&inst, &n}, func() error {
		if i, ok := at[inst]; ok {
			page[i].Held = n
		}
		return nil
	})
	return err
}

// Sagas returns the names of the sagas whose runners have claimed a
// partition in the store, in order: what an operator's tools list.
func (s *SagaStore) Sagas(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, s.sql(`SELECT DISTINCT saga FROM {partitions} ORDER BY saga`))
	if err != nil {
		return nil, sagaErr("list sagas", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, sagaErr("list sagas", err)
	}
	return names, nil
}

// Count implements saga.Store.
func (s *SagaStore) Count(ctx context.Context, sagaName string) (map[saga.Status]int, error) {
	if err := saga.ValidateName(sagaName); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT status, count(*) FROM {instances} WHERE saga = $1 GROUP BY status`), sagaName)
	if err != nil {
		return nil, sagaErr("count", err)
	}
	out := map[saga.Status]int{}
	var (
		st string
		n  int
	)
	_, err = pgx.ForEachRow(rows, []any{&st, &n}, func() error {
		out[saga.Status(st)] = n
		return nil
	})
	if err != nil {
		return nil, sagaErr("count", err)
	}
	return out, nil
}

// CountPartition implements saga.Store.
func (s *SagaStore) CountPartition(ctx context.Context, sagaName string, partition int) (map[saga.Status]int, error) {
	if err := saga.ValidateName(sagaName); err != nil {
		return nil, err
	}
	if partition < 0 || partition >= saga.MaxPartitions {
		return nil, &saga.InvalidError{Field: "partition", Value: strconv.Itoa(partition), Reason: "out of range"}
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT status, count(*) FROM {instances} WHERE saga = $1 AND partition = $2 GROUP BY status`), sagaName, partition)
	if err != nil {
		return nil, sagaErr("count partition", err)
	}
	out := map[saga.Status]int{}
	var (
		st string
		n  int
	)
	if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error {
		out[saga.Status(st)] = n
		return nil
	}); err != nil {
		return nil, sagaErr("count partition", err)
	}
	return out, nil
}

// Progress implements saga.Store.
func (s *SagaStore) Progress(ctx context.Context, sagaName string) ([]saga.PartitionProgress, error) {
	if err := saga.ValidateName(sagaName); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT partition, pos_tx, pos_seq, token, updated_at FROM {partitions} WHERE saga = $1 ORDER BY partition`), sagaName)
	if err != nil {
		return nil, sagaErr("read progress", err)
	}
	var (
		out            []saga.PartitionProgress
		p              saga.PartitionProgress
		ptx, pseq, tok int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&p.Partition, &ptx, &pseq, &tok, &p.UpdatedAt}, func() error {
		p.Checkpoint, p.Token = eventstore.Position{Tx: uint64(ptx), Seq: uint64(pseq)}, uint64(tok)
		out = append(out, p)
		return nil
	}); err != nil {
		return nil, sagaErr("read progress", err)
	}
	return out, nil
}

// Retry implements saga.Store.
func (s *SagaStore) Retry(ctx context.Context, sagaName, id string) error {
	return s.operate(ctx, sagaName, id, false)
}

// Skip implements saga.Store.
func (s *SagaStore) Skip(ctx context.Context, sagaName, id string) error {
	return s.operate(ctx, sagaName, id, true)
}

func (s *SagaStore) operate(ctx context.Context, sagaName, id string, skip bool) error {
	if err := saga.ValidateRef(sagaName, id); err != nil {
		return err
	}
	err := s.writeTx(ctx, func(tx pgx.Tx) error {
		var raw []byte
		var status string
		err := tx.QueryRow(ctx, s.sql(`SELECT park, status FROM {instances} WHERE saga = $1 AND id = $2 FOR UPDATE`), sagaName, id).Scan(&raw, &status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: saga %q instance %q", saga.ErrNotFound, sagaName, id)
		}
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: saga %q instance %q is %s", saga.ErrNotParked, sagaName, id, status)
		}
		var p saga.Park
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		head := func(table string) string {
			return `(SELECT min(seq) FROM ` + table + ` WHERE saga = $1 AND instance = $2)`
		}
		switch {
		case p.Kind == saga.ParkCommand && skip:
			_, err = tx.Exec(ctx, s.sql(`DELETE FROM {commands} WHERE saga = $1 AND instance = $2 AND seq = `+head("{commands}")), sagaName, id)
		case p.Kind == saga.ParkCommand:
			_, err = tx.Exec(ctx, s.sql(`UPDATE {commands} SET attempts = 0, next_attempt = 'epoch' WHERE saga = $1 AND instance = $2 AND seq = `+head("{commands}")), sagaName, id)
		case p.Kind == saga.ParkRecord && skip:
			_, err = tx.Exec(ctx, s.sql(`DELETE FROM {held} WHERE saga = $1 AND instance = $2 AND seq = `+head("{held}")), sagaName, id)
		case p.Kind == saga.ParkDeadline && skip:
			_, err = tx.Exec(ctx, s.sql(`DELETE FROM {deadlines} WHERE saga = $1 AND instance = $2 AND name = $3`), sagaName, id, p.Ref)
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql(`UPDATE {instances} SET park = NULL, version = version + 1, updated_at = now() WHERE saga = $1 AND id = $2`), sagaName, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, s.sql(statusSQL), sagaName, id)
		return err
	})
	if err != nil {
		return sagaErr("operate on "+id, err)
	}
	return nil
}
