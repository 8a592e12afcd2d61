package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/projection"
)

// The bench's domain: an account that takes deposits.

// account is the state of an account stream.
type account struct {
	Balance  int64 `json:"balance"`
	Deposits int64 `json:"deposits"`
}

// deposit asks for N deposits of Amount (N = 0 means one).
type deposit struct {
	Amount int64
	N      int
}

// deposited is the event of one deposit.
type deposited struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Note     string `json:"note"`
}

const depositedType = "Deposited"

func depositedEvent(i int) deposited {
	return deposited{Amount: int64(i%1000 + 1), Currency: "EUR", Note: "benchmark"}
}

// accountDecider is the account's decider.
type accountDecider struct{}

func (accountDecider) Initial() account { return account{} }

func (accountDecider) Decide(_ account, c deposit) ([]deposited, error) {
	n := max(c.N, 1)
	out := make([]deposited, n)
	for i := range out {
		out[i] = deposited{Amount: c.Amount, Currency: "EUR", Note: "benchmark"}
	}
	return out, nil
}

func (accountDecider) Evolve(s account, e deposited) account {
	s.Balance += e.Amount
	s.Deposits++
	return s
}

type repo = aggregate.Repository[account, deposit, deposited]

func newRegistry() (*eventstore.Registry, error) {
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[deposited](reg, depositedType); err != nil {
		return nil, err
	}
	return reg, nil
}

// plainRow is one row of the plain baseline table, encoded as the store
// encodes it.
type plainRow struct {
	id       uuid.UUID
	typ      string
	data     []byte
	metadata []byte // nil when the event has none
}

// encodeRow encodes v as the store would store it.
func encodeRow(reg *eventstore.Registry, v any, md eventstore.Metadata) (plainRow, error) {
	ev, err := reg.Encode(v, md)
	if err != nil {
		return plainRow{}, err
	}
	return rowOf(ev)
}

func rowOf(ev eventstore.Event) (plainRow, error) {
	r := plainRow{id: ev.ID, typ: ev.Type, data: ev.Data}
	if ev.ID == uuid.Nil {
		r.id = eventstore.NewEventID()
	}
	if len(ev.Metadata) > 0 {
		b, err := json.Marshal(ev.Metadata)
		if err != nil {
			return plainRow{}, err
		}
		r.metadata = b
	}
	return r, nil
}

// plainInsert inserts one row in its own transaction.
func plainInsert(schema string) string {
	return fmt.Sprintf(`INSERT INTO %s.plain (tx, id, stream_id, version, event_type, data, metadata) VALUES (0, $1, $2, $3, $4, $5, $6)`, schema)
}

// plainInsertMany inserts many rows of one stream in one statement.
func plainInsertMany(schema string) string {
	return fmt.Sprintf(`INSERT INTO %s.plain (tx, id, stream_id, version, event_type, data, metadata)
SELECT 0, u.id, $1, u.v, u.t, u.d, u.m FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::bytea[], $6::bytea[]) AS u(id, v, t, d, m)`, schema)
}

var plainColumns = []string{"tx", "id", "stream_id", "version", "event_type", "data", "metadata"}

// copyRows copies rows into the plain table.
func copyRows(ctx context.Context, conn interface {
	CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error)
}, schema string, rows [][]any) error {
	_, err := conn.CopyFrom(ctx, pgx.Identifier{schema, "plain"}, plainColumns, pgx.CopyFromRows(rows))
	return err
}

// depositEvents encodes n deposits.
func depositEvents(reg *eventstore.Registry, from, n int) ([]eventstore.Event, error) {
	out := make([]eventstore.Event, n)
	for i := range out {
		ev, err := reg.Encode(depositedEvent(from+i), nil)
		if err != nil {
			return nil, err
		}
		ev.ID = eventstore.NewEventID()
		out[i] = ev
	}
	return out, nil
}

// streamBatch returns n events spread over streams of perStream events
// each, named <name>-<k>, ready for Import.
func streamBatch(reg *eventstore.Registry, name string, n, perStream int) ([]eventstore.StreamAppend, error) {
	var out []eventstore.StreamAppend
	for k := 0; k*perStream < n; k++ {
		evs, err := depositEvents(reg, k*perStream, min(perStream, n-k*perStream))
		if err != nil {
			return nil, err
		}
		out = append(out, eventstore.StreamAppend{StreamID: name + "-" + strconv.Itoa(k), Expected: eventstore.NoStream, Events: evs})
	}
	return out, nil
}

// The bench's projection: balances and a deposit count per account.

const projectionName = "balances"

// applyBalance queues the writes of one deposit on p: the account's
// balance and the number of deposits.
func applyBalance(ctx context.Context, p redis.Pipeliner, key func(...string) string, streamID string, ev deposited) {
	p.HIncrBy(ctx, key("balance"), streamID, ev.Amount)
	p.Incr(ctx, key("deposits"))
}

// balances returns the projection, applied in the given number of
// partitions; onCommit (if not nil) is called for every live record once
// its batch has committed.
func balances(reg *eventstore.Registry, onCommit func(rec eventstore.Record), partitions int) projection.Projection {
	return projection.New(projectionName, projection.Typed(reg,
		func(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev deposited) error {
			applyBalance(ctx, b.Pipe(), b.Key, rec.StreamID, ev)
			if onCommit != nil {
				b.AfterCommit(func(context.Context) { onCommit(rec) })
			}
			return nil
		}), projection.Partitions(partitions))
}

// decodeDeposited decodes a record as the projections do.
func decodeDeposited(reg *eventstore.Registry, r eventstore.Record) (deposited, error) {
	v, err := reg.Decode(r)
	if err != nil {
		return deposited{}, err
	}
	ev, ok := v.(deposited)
	if !ok {
		return deposited{}, fmt.Errorf("unexpected event %T", v)
	}
	return ev, nil
}

// rawProject writes what the balances projection writes for recs, in
// TxPipelined batches of batch records plus a checkpoint write each, as a
// hand-written projector would; the payloads are decoded as the projection
// decodes them.
func rawProject(ctx context.Context, rdb *redis.Client, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record, batch int) error {
	for i := 0; i < len(recs); i += batch {
		chunk := recs[i:min(i+batch, len(recs))]
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, r := range chunk {
				ev, err := decodeDeposited(reg, r)
				if err != nil {
					return err
				}
				applyBalance(ctx, p, ns.Key, r.StreamID, ev)
			}
			p.Set(ctx, ns.Key("checkpoint"), chunk[len(chunk)-1].Position.String(), 0)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// countFeed pages through the whole feed as a consumer would, handling
// each page and dropping it, and returns how many records it read.
func countFeed(ctx context.Context, feed eventstore.FeedReader, page int) (int, error) {
	var (
		after eventstore.Position
		n     int
	)
	for {
		recs, err := feed.ReadAll(ctx, after, page)
		if err != nil {
			return n, err
		}
		if len(recs) == 0 {
			return n, nil
		}
		n += len(recs)
		after = recs[len(recs)-1].Position
	}
}
