package readmodel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// ledger builds a bank's history with the deciders, so that every event is
// one the domain accepts, and keeps the totals it must add up to in exact
// arithmetic, independently of the projection.
type ledger struct {
	t         *testing.T
	accounts  map[uuid.UUID]*domain.Account
	transfers map[uuid.UUID]*domain.Transfer
	// pending are the events not appended yet, per stream, and streams
	// the order their streams first got one.
	pending map[string][]any
	streams []string
	// deposited and withdrawn per currency (transfers excluded).
	deposited, withdrawn map[string]*big.Int
	statuses             map[domain.TransferStatus]int64
}

func newLedger(t *testing.T) *ledger {
	return &ledger{
		t: t, accounts: map[uuid.UUID]*domain.Account{}, transfers: map[uuid.UUID]*domain.Transfer{},
		pending: map[string][]any{}, deposited: map[string]*big.Int{}, withdrawn: map[string]*big.Int{},
		statuses: map[domain.TransferStatus]int64{},
	}
}

func (l *ledger) record(stream string, e any) {
	if len(l.pending[stream]) == 0 {
		l.streams = append(l.streams, stream)
	}
	l.pending[stream] = append(l.pending[stream], e)
}

func (l *ledger) open(currency string) uuid.UUID {
	id := uuid.New()
	l.accounts[id] = &domain.Account{}
	l.account(id, domain.OpenAccount{ID: id, Owner: "owner", Currency: currency})
	return id
}

// account applies a command to an account; the domain must accept it.
func (l *ledger) account(id uuid.UUID, cmd domain.AccountCommand) {
	l.t.Helper()
	d := domain.AccountDecider{}
	a := l.accounts[id]
	events, err := d.Decide(*a, cmd)
	require.NoError(l.t, err, "%T on account %s", cmd, id)
	for _, e := range events {
		*a = d.Evolve(*a, e)
		l.record(domain.AccountStream(id), e)
		switch e := e.(type) {
		case domain.Deposited:
			if e.TransferID == uuid.Nil {
				addTo(l.deposited, a.Currency, e.Amount)
			}
		case domain.Withdrawn:
			if e.TransferID == uuid.Nil {
				addTo(l.withdrawn, a.Currency, e.Amount)
			}
		}
	}
}

func addTo(m map[string]*big.Int, cur string, n int64) {
	if m[cur] == nil {
		m[cur] = new(big.Int)
	}
	m[cur].Add(m[cur], big.NewInt(n))
}

func (l *ledger) transfer(id uuid.UUID, cmd domain.TransferCommand) {
	l.t.Helper()
	d := domain.TransferDecider{}
	tr := l.transfers[id]
	if tr == nil {
		tr = &domain.Transfer{}
		l.transfers[id] = tr
	}
	events, err := d.Decide(*tr, cmd)
	require.NoError(l.t, err, "%T on transfer %s", cmd, id)
	for _, e := range events {
		if tr.Status != "" {
			l.statuses[tr.Status]--
		}
		*tr = d.Evolve(*tr, e)
		l.statuses[tr.Status]++
		l.record(domain.TransferStream(id), e)
	}
}

// Outcomes of move.
const (
	completed = "completed"
	refunded  = "refunded"
	inFlight  = "in flight"
)

// move runs a transfer the way the transfer process does, up to the
// outcome.
func (l *ledger) move(from, to uuid.UUID, amount int64, outcome string) {
	l.t.Helper()
	id, cur := uuid.New(), l.accounts[from].Currency
	l.transfer(id, domain.RequestTransfer{ID: id, From: from, To: to, Amount: amount, Currency: cur})
	l.account(from, domain.DebitForTransfer{TransferID: id, Amount: amount, Currency: cur})
	l.transfer(id, domain.RecordDebit{})
	switch outcome {
	case completed:
		l.account(to, domain.CreditForTransfer{TransferID: id, Amount: amount, Currency: cur})
		l.transfer(id, domain.CompleteTransfer{})
		l.account(from, domain.SettleTransfer{TransferID: id})
	case refunded:
		l.transfer(id, domain.RecordCreditFailure{Reason: "account_frozen"})
		l.account(from, domain.RefundTransfer{TransferID: id})
		l.transfer(id, domain.RecordRefund{})
	}
}

// flush appends the pending events, one append per stream.
func (l *ledger) flush(ctx context.Context, store eventstore.Store, reg *eventstore.Registry) {
	l.t.Helper()
	for _, stream := range l.streams {
		evs := make([]eventstore.Event, len(l.pending[stream]))
		for i, e := range l.pending[stream] {
			ev, err := reg.Encode(e, nil)
			require.NoError(l.t, err)
			evs[i] = ev
		}
		_, err := store.Append(ctx, stream, eventstore.Any, evs...)
		require.NoError(l.t, err)
	}
	l.pending, l.streams = map[string][]any{}, nil
}

// want returns the Stats the history must give.
func (l *ledger) want() readmodel.Stats {
	held, inFlight := map[string]*big.Int{}, map[string]*big.Int{}
	s := readmodel.Stats{Accounts: map[string]int64{"total": 0}, Transfers: map[string]int64{"total": 0}, Money: map[string]readmodel.Money{}}
	for _, a := range l.accounts {
		addTo(held, a.Currency, a.Balance)
		addTo(inFlight, a.Currency, a.PendingTotal())
		s.Accounts["total"]++
		s.Accounts[string(a.Status)]++
	}
	for st, n := range l.statuses {
		if n > 0 {
			s.Transfers[string(st)] = n
		}
	}
	s.Transfers["total"] = int64(len(l.transfers))
	amount := func(m map[string]*big.Int, cur string) readmodel.Amount {
		if m[cur] == nil {
			return readmodel.Amount{}
		}
		a, err := readmodel.ParseAmount(m[cur].String())
		require.NoError(l.t, err)
		return a
	}
	for cur := range held {
		s.Money[cur] = readmodel.Money{
			Held: amount(held, cur), InFlight: amount(inFlight, cur),
			Deposited: amount(l.deposited, cur), Withdrawn: amount(l.withdrawn, cur),
		}
	}
	return s
}

// TestTotalsBeyondInt64 fills many accounts of one currency up to the
// edge (deposits of up to domain.MaxAmount each, far more than 2^63 in
// all), moves money out and between them, and checks that the totals are
// the exact sums, whatever the partitions, on Redis and on miniredis (the
// embedded mode's), with nothing parked.
func TestTotalsBeyondInt64(t *testing.T) {
	for name, server := range readmodel.RedisServersForTest("bank:") {
		for _, partitions := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/partitions=%d", name, partitions), func(t *testing.T) {
				t.Parallel()
				rdb, prefix := server(t)
				checkTotals(t, partitions, func(reg *eventstore.Registry, _ eventstore.Store) (projection.Target, []projection.Projection, func(*projection.Reader) (*readmodel.Queries, error), string) {
					return projection.Redis(rdb), readmodel.Projections(reg, readmodel.WithPartitions(partitions)),
						func(r *projection.Reader) (*readmodel.Queries, error) { return readmodel.NewQueries(rdb, r) }, prefix
				})
			})
		}
	}
	for _, partitions := range []int{1, 3} {
		t.Run(fmt.Sprintf("postgres/partitions=%d", partitions), func(t *testing.T) {
			t.Parallel()
			pool := testsvc.Pool(t)
			require.NoError(t, pgstore.Migrate(t.Context(), pool, "eskit"))
			checkTotals(t, partitions, func(reg *eventstore.Registry, _ eventstore.Store) (projection.Target, []projection.Projection, func(*projection.Reader) (*readmodel.Queries, error), string) {
				return projection.Postgres(pool, "eskit"), readmodel.PostgresProjections(reg, pool, readmodel.WithPartitions(partitions)),
					func(r *projection.Reader) (*readmodel.Queries, error) { return readmodel.NewPostgresQueries(pool, r) }, "bank"
			})
		})
	}
}

// targetFor returns the target, the projections, the queries' constructor
// and the key prefix of one kind of read-model store.
type targetFor func(reg *eventstore.Registry, store eventstore.Store) (projection.Target, []projection.Projection, func(*projection.Reader) (*readmodel.Queries, error), string)

func checkTotals(t *testing.T, partitions int, on targetFor) {
	ctx := t.Context()
	reg := eventstore.NewRegistry()
	require.NoError(t, domain.Register(reg))
	store := memstore.New()
	l := newLedger(t)

	const accounts, deposits = 12, 1200
	eur := make([]uuid.UUID, accounts)
	for i := range eur {
		eur[i] = l.open("EUR")
	}
	yen := l.open("JPY")
	l.account(yen, domain.Deposit{Amount: 500, Currency: "JPY"})
	// Amounts at the edge, and ones whose low parts carry and borrow.
	amounts := []int64{domain.MaxAmount, domain.MaxAmount - 1, domain.MaxAmount - 1, 123_456_789_012_345}
	for d := range deposits {
		for _, id := range eur {
			l.account(id, domain.Deposit{Amount: amounts[d%len(amounts)], Currency: "EUR"})
		}
		if d%300 == 299 {
			l.flush(ctx, store, reg)
		}
	}
	for i, id := range eur {
		for _, amount := range []int64{domain.MaxAmount - 1, 3, 777_777_777_777_777} {
			l.account(id, domain.Withdraw{Amount: amount, Currency: "EUR"})
		}
		next := eur[(i+1)%len(eur)]
		l.move(id, next, domain.MaxAmount, completed)
		l.move(id, next, 555_555_555_555_555, completed)
		l.move(id, next, 1, refunded)
	}
	l.move(eur[0], eur[1], domain.MaxAmount, inFlight)
	l.move(eur[2], eur[3], domain.MaxAmount-7, inFlight)
	l.flush(ctx, store, reg)

	want := l.want()
	if n := want.Money["EUR"].Deposited.Big(); n.IsInt64() || n.Cmp(new(big.Int).Lsh(big.NewInt(1), 63)) <= 0 {
		t.Fatalf("the deposits add up to %s, not beyond 2^63", n)
	}
	for _, id := range eur {
		require.Equal(t, domain.StatusOpen, l.accounts[id].Status)
	}

	target, projs, newQueries, prefix := on(reg, store)
	var totals []projection.Projection
	for _, p := range projs {
		if p.Name() == readmodel.Totals {
			totals = append(totals, p)
		}
	}
	require.Len(t, totals, 1)
	runner, err := projection.NewRunnerOn(target, store, totals,
		projection.WithPrefix(prefix),
		projection.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))),
		projection.WithLease(time.Second, 100*time.Millisecond),
		projection.WithAttempts(2), projection.WithBackoffPolicy(backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond}),
		projection.WithPollInterval(20*time.Millisecond))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})

	waitCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	require.NoError(t, runner.WaitFor(waitCtx, readmodel.Totals, testsvc.SettledHead(t, store)))
	parked, err := runner.Parked(ctx, readmodel.Totals)
	require.NoError(t, err)
	if len(parked) > 0 {
		t.Fatalf("%d records parked, the first: %s", len(parked), parked[0].Error)
	}

	reader, err := projection.NewReaderOn(target, prefix, store)
	require.NoError(t, err)
	q, err := newQueries(reader)
	require.NoError(t, err)
	got, err := q.Stats(ctx, readmodel.GetStats{})
	require.NoError(t, err)
	require.Equal(t, want, got)
	for cur, m := range got.Money {
		require.Equal(t, m.Deposited.Sub(m.Withdrawn), m.Held.Add(m.InFlight), "money of %s is conserved", cur)
	}
	eurMoney := got.Money["EUR"]
	_, fits := eurMoney.Deposited.Int64()
	require.False(t, fits)
	inFlight, fits := eurMoney.InFlight.Int64()
	require.True(t, fits)
	require.Equal(t, 2*domain.MaxAmount-7, inFlight)

	// JSON carries every digit, as a number.
	raw, err := json.Marshal(got)
	require.NoError(t, err)
	var decoded struct {
		Money map[string]map[string]json.RawMessage `json:"money"`
	}
	require.NoError(t, json.Unmarshal(raw, &decoded))
	require.Equal(t, eurMoney.Deposited.String(), string(decoded.Money["EUR"]["deposited"]))
	var back readmodel.Stats
	require.NoError(t, json.Unmarshal(raw, &back))
	require.Equal(t, got, back)
}
