package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/jackc/pgx/v5"

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

type inlineProj struct {
	p          Projection
	name       string
	partitions int
	k          keys
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
		m, err := in.be.readMetaQ(ctx, tx, ip.name)
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
// rolled back and the record left to the runner.
func (in *Inline) applyOne(ctx context.Context, tx pgx.Tx, ip *inlineProj, m meta, rec eventstore.Record) ([]func(context.Context), error) {
	p := eventstore.StreamPartition(rec.StreamID, ip.partitions)
	ns := ip.k.namespace(m.active, p, ip.partitions)
	if _, err := tx.Exec(ctx, `SAVEPOINT eskit_inline`); err != nil {
		return nil, fmt.Errorf("projection: inline: %w", err)
	}
	applied, b, err := in.claimAndApply(ctx, tx, ip, ns, rec)
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
	if _, err := tx.Exec(ctx, `RELEASE SAVEPOINT eskit_inline`); err != nil {
		return nil, fmt.Errorf("projection: inline: release savepoint: %w", err)
	}
	return b.after, nil
}

// claimAndApply moves the stream's version in ns from rec.Version-1 to
// rec.Version (false when it is not at rec.Version-1: applied already, or
// a record before it missing), then applies rec.
func (in *Inline) claimAndApply(ctx context.Context, tx pgx.Tx, ip *inlineProj, ns Namespace, rec eventstore.Record) (bool, *Batch, error) {
	key := ip.k.streams(ns.Partition, ns.Version)
	newV := strconv.FormatInt(rec.Version, 10)
	var tag interface{ RowsAffected() int64 }
	var err error
	if rec.Version == 1 {
		tag, err = tx.Exec(ctx, `INSERT INTO `+in.be.state+` (k, f, v) VALUES ($1, $2, $3) ON CONFLICT (k, f) DO NOTHING`, key, rec.StreamID, newV)
	} else {
		tag, err = tx.Exec(ctx, `UPDATE `+in.be.state+` SET v = $3 WHERE k = $1 AND f = $2 AND v = $4`, key, rec.StreamID, newV, strconv.FormatInt(rec.Version-1, 10))
	}
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
	return true, b, nil
}
