package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eskit/eskit/eventstore"
)

// Inline applies PostgreSQL projections in the transaction of the append
// itself, so that a command's read model is consistent the moment the
// command returns: call Apply with the records an append wrote
// (pgstore.Store.AppendTxRecords) before committing. The projections are
// the same ones a Runner applies asynchronously; run a Runner of them as
// well, on a target made with SharedWithInline: it builds the read models
// (first build, rebuilds, a partition rebuilt in place) and applies what
// no Inline applied (an append without it, an Inline whose write failed).
//
// An inline apply claims each record by its stream's version in the
// active namespace (the version goes from the record's previous one to
// its own, in the same statement that takes the row's lock), so a record
// is applied once, by the Inline or by a runner, never by both. A record
// the Inline cannot apply — the read model is being built, the stream has
// a record it has not got yet, the projection's write fails, a runner
// holds the row — is left to the runner, and the append goes on: the
// read model never fails a command.
type Inline struct {
	be    *pgBackend
	projs []*inlineProj
	log   *slog.Logger
}

// errActiveMoved reports an Inline's cached active version that a switch
// replaced.
var errActiveMoved = errors.New("projection: inline: the active version moved")

// inlineMetaTTL is how long an Inline trusts the meta it read (the active
// version): after a switch, an Inline that still writes the old version
// fails there (or writes what is dropped with it), and the runner applies
// the record to the new one.
const inlineMetaTTL = time.Second

type inlineProj struct {
	p          Projection
	name       string
	partitions int
	k          keys

	mu     sync.Mutex
	meta   meta
	readAt time.Time
}

// activeMeta returns the projection's meta, read through tx at most
// inlineMetaTTL ago.
func (in *Inline) activeMeta(ctx context.Context, tx pgx.Tx, ip *inlineProj) (meta, error) {
	ip.mu.Lock()
	m, at := ip.meta, ip.readAt
	ip.mu.Unlock()
	if !at.IsZero() && time.Since(at) < inlineMetaTTL {
		return m, nil
	}
	m, err := in.be.readMetaQ(ctx, tx, ip.name)
	if err != nil {
		return meta{}, err
	}
	ip.mu.Lock()
	ip.meta, ip.readAt = m, time.Now()
	ip.mu.Unlock()
	return m, nil
}

// NewInline returns the inline applier of projections on the PostgreSQL
// target (which must be the event store's database: Apply runs in the
// append's transaction), with the runners' key prefix.
func NewInline(target Target, prefix string, projections ...Projection) (*Inline, error) {
	prefix = KeyPrefix(prefix)
	be, err := target.backend(prefix)
	if err != nil {
		return nil, err
	}
	pb, ok := be.(*pgBackend)
	if !ok {
		return nil, errors.New("projection: Inline needs the PostgreSQL target")
	}
	if err := pb.configure(projections); err != nil {
		return nil, err
	}
	in := &Inline{be: pb, log: slog.Default().With("component", "projection.inline")}
	for _, p := range projections {
		if err := ValidateName(p.Name()); err != nil {
			return nil, err
		}
		in.projs = append(in.projs, &inlineProj{p: p, name: p.Name(), partitions: partitionsOf(p), k: newKeys(prefix, p.Name())})
	}
	return in, nil
}

// Apply applies recs (records appended in tx, in feed order) to every
// projection's active namespace, in tx. It returns the side effects the
// applies registered (Batch.AfterCommit): run them once tx has committed.
// It fails only when tx itself fails (the append must then be rolled
// back anyway); a record it does not apply is left to the runner.
func (in *Inline) Apply(ctx context.Context, tx pgx.Tx, recs []eventstore.Record) (after func(context.Context), err error) {
	var effects []func(context.Context)
	for _, ip := range in.projs {
		m, err := in.activeMeta(ctx, tx, ip)
		if err != nil {
			return nil, err
		}
		if m.ready(ip.name) != nil {
			continue // being built: the runner applies everything
		}
		for _, rec := range recs {
			fx, err := in.applyOne(ctx, tx, ip, m, rec)
			if err != nil {
				return nil, err
			}
			effects = append(effects, fx...)
		}
	}
	return func(ctx context.Context) {
		for _, fn := range effects {
			func() {
				defer func() {
					if v := recover(); v != nil {
						in.log.Error("projection: inline side effect panicked", "panic", v)
					}
				}()
				fn(ctx)
			}()
		}
	}, nil
}

// applyOne claims rec in ip's active namespace and applies it, under a
// savepoint: on any failure of the projection's writes the savepoint is
// rolled back and the record left to the runner. An apply that only
// queues statements costs one round trip: the savepoint, the claim and
// the statements together.
func (in *Inline) applyOne(ctx context.Context, tx pgx.Tx, ip *inlineProj, m meta, rec eventstore.Record) ([]func(context.Context), error) {
	p := eventstore.StreamPartition(rec.StreamID, ip.partitions)
	ns := ip.k.namespace(m.active, p, ip.partitions)
	claim, args := in.claimSQL(ip, ns, rec)
	b := &Batch{tx: nil, ns: ns}
	// First without the transaction: most applies only queue statements.
	if err := safeApply(ctx, ip.p, b, rec); err == nil && !b.usedTx {
		batch := &pgx.Batch{}
		batch.Queue(`SAVEPOINT eskit_inline`)
		// The active version, under a share lock: a switch waits for this
		// transaction, and one that came before it is seen here.
		batch.Queue(`SELECT v FROM `+in.be.state+` WHERE k = $1 AND f = 'active' FOR SHARE`, ip.k.meta())
		batch.Queue(claim, args...)
		for _, s := range b.queued {
			batch.Queue(s.sql, s.args...)
		}
		br := tx.SendBatch(ctx, batch)
		_, serr := br.Exec()
		if serr != nil {
			_ = br.Close()
			return nil, fmt.Errorf("projection: inline: savepoint: %w", serr)
		}
		var active string
		err := br.QueryRow().Scan(&active)
		if err == nil && active != strconv.FormatInt(m.active, 10) {
			err = errActiveMoved
		}
		var tag pgconn.CommandTag
		if err == nil {
			tag, err = br.Exec()
		}
		claimed := err == nil && tag.RowsAffected() == 1
		for range len(b.queued) {
			if err != nil {
				break
			}
			_, err = br.Exec()
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err == nil && claimed {
			// The savepoint stays: the transaction's commit keeps its
			// work (a later ROLLBACK TO SAVEPOINT eskit_inline rolls back
			// to the newest one only), and releasing it would cost a
			// round trip per record.
			return b.after, nil
		}
		// Not claimed (applied already, or a record missing before it),
		// or a statement failed: undo, and leave the record to the runner.
		if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT eskit_inline`); rerr != nil {
			return nil, fmt.Errorf("projection: inline: roll back to savepoint: %w", rerr)
		}
		if errors.Is(err, errActiveMoved) {
			// A rebuild switched: read the meta again and write the new
			// version.
			ip.mu.Lock()
			ip.readAt = time.Time{}
			ip.mu.Unlock()
			m, err := in.activeMeta(ctx, tx, ip)
			if err != nil {
				return nil, err
			}
			if m.ready(ip.name) != nil {
				return nil, nil
			}
			return in.applyOne(ctx, tx, ip, m, rec)
		}
		if err != nil {
			in.log.Warn("projection: inline apply failed; the runner applies the record", "projection", ip.name,
				"stream", rec.StreamID, "version", rec.Version, "err", err)
		}
		return nil, nil
	}
	// The apply failed, or it needs the transaction: claim first, then
	// apply again on the transaction.
	if _, err := tx.Exec(ctx, `SAVEPOINT eskit_inline`); err != nil {
		return nil, fmt.Errorf("projection: inline: %w", err)
	}
	applied, b, err := in.claimAndApply(ctx, tx, ip, ns, rec, claim, args)
	if err != nil || !applied {
		if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT eskit_inline`); rerr != nil {
			return nil, fmt.Errorf("projection: inline: roll back to savepoint: %w", rerr)
		}
		if err != nil {
			in.log.Warn("projection: inline apply failed; the runner applies the record", "projection", ip.name,
				"stream", rec.StreamID, "version", rec.Version, "err", err)
		}
		return nil, nil
	}
	return b.after, nil // the savepoint stays, as above
}

// claimSQL is the statement that moves the stream's version in ns from
// rec.Version-1 to rec.Version (no row is changed when it is not at
// rec.Version-1: applied already, or a record before it missing).
func (in *Inline) claimSQL(ip *inlineProj, ns Namespace, rec eventstore.Record) (string, []any) {
	key := ip.k.streams(ns.Partition, ns.Version)
	newV := strconv.FormatInt(rec.Version, 10)
	if rec.Version == 1 {
		return `INSERT INTO ` + in.be.state + ` (k, f, v) VALUES ($1, $2, $3) ON CONFLICT (k, f) DO NOTHING`, []any{key, rec.StreamID, newV}
	}
	return `UPDATE ` + in.be.state + ` SET v = $3 WHERE k = $1 AND f = $2 AND v = $4`, []any{key, rec.StreamID, newV, strconv.FormatInt(rec.Version-1, 10)}
}

// claimAndApply claims rec, then applies it on the transaction.
func (in *Inline) claimAndApply(ctx context.Context, tx pgx.Tx, ip *inlineProj, ns Namespace, rec eventstore.Record, claim string, args []any) (bool, *Batch, error) {
	tag, err := tx.Exec(ctx, claim, args...)
	if err != nil {
		return false, nil, err
	}
	if tag.RowsAffected() != 1 {
		return false, nil, nil
	}
	b := &Batch{tx: tx, ns: ns}
	if err := safeApply(ctx, ip.p, b, rec); err != nil {
		return false, nil, err
	}
	if len(b.queued) > 0 {
		batch := &pgx.Batch{}
		for _, s := range b.queued {
			batch.Queue(s.sql, s.args...)
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return false, nil, err
		}
	}
	if err := b.flushGathered(ctx, tx); err != nil {
		return false, nil, err
	}
	return true, b, nil
}
