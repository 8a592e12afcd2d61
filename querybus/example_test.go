package querybus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/querybus"
)

// Balance is a read model answer.
type Balance struct {
	Account string
	Amount  int64
}

// GetBalance is a query served from the "accounts" projection.
type GetBalance struct{ Account string }

// Deposit is a command.
type Deposit struct {
	Account string
	Amount  int64
}

// readModel stands in for a projection and its read model: apply updates
// the balances and the checkpoint together; WaitFor is the projection
// runner's.
type readModel struct {
	mu         sync.Mutex
	changed    *sync.Cond
	balances   map[string]int64
	checkpoint eventstore.Position
}

func newReadModel() *readModel {
	m := &readModel{balances: map[string]int64{}}
	m.changed = sync.NewCond(&m.mu)
	return m
}

func (m *readModel) apply(pos eventstore.Position, account string, amount int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.balances[account] += amount
	m.checkpoint = pos
	m.changed.Broadcast()
}

func (m *readModel) WaitFor(ctx context.Context, _ string, pos eventstore.Position) error {
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.changed.Broadcast()
	})
	defer stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.checkpoint.Before(pos) {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.changed.Wait()
	}
	return nil
}

func Example_readYourWrites() {
	model := newReadModel()

	commands := commandbus.New()
	var seq uint64
	_ = commandbus.Register(commands, func(_ context.Context, d Deposit) (commandbus.Result, error) {
		seq++
		pos := eventstore.Position{Tx: 500, Seq: seq}
		// The event is stored; the projection applies it a little later.
		go model.apply(pos, d.Account, d.Amount)
		return commandbus.Result{StreamID: "account-" + d.Account, Version: int64(seq), Position: pos}, nil
	})

	queries := querybus.New(querybus.WithWaiter(model), querybus.WithWaitTimeout(2*time.Second))
	_ = querybus.Register(queries, func(_ context.Context, q GetBalance) (Balance, error) {
		model.mu.Lock()
		defer model.mu.Unlock()
		return Balance{Account: q.Account, Amount: model.balances[q.Account]}, nil
	}, querybus.ReadsFrom("accounts"))

	ctx := context.Background()
	res, _ := commandbus.Send(ctx, commands, Deposit{Account: "42", Amount: 100})

	// Wait until the "accounts" projection has the deposit, then read.
	b, err := querybus.Ask[GetBalance, Balance](querybus.WithMinPosition(ctx, "", res.Position), queries, GetBalance{Account: "42"})
	fmt.Println(b.Amount, err)

	// A position the projection never reaches times out with a typed error.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = querybus.Ask[GetBalance, Balance](querybus.WithMinPosition(ctx, "", eventstore.Position{Tx: 999}), queries, GetBalance{Account: "42"})
	var cte *querybus.ConsistencyTimeoutError
	fmt.Println(errors.As(err, &cte), cte.Projection, cte.Want)
	// Output:
	// 100 <nil>
	// true accounts 999-0
}

// notFound is a handler's error that querybus.Outcome (and so Logging and
// Telemetry) classifies by its NotFound method.
type notFound struct{ account string }

func (e notFound) Error() string  { return "no account " + e.account }
func (e notFound) NotFound() bool { return true }

// A query is a type, its answer another: Ask is typed on both.
func Example() {
	balances := map[string]int64{"42": 100}
	queries := querybus.New(querybus.WithMiddleware(querybus.Timeout(time.Second)))
	_ = querybus.Register(queries, func(_ context.Context, q GetBalance) (Balance, error) {
		amount, ok := balances[q.Account]
		if !ok {
			return Balance{}, notFound{q.Account}
		}
		return Balance{Account: q.Account, Amount: amount}, nil
	})

	ctx := context.Background()
	b, err := querybus.Ask[GetBalance, Balance](ctx, queries, GetBalance{Account: "42"})
	fmt.Println(b.Amount, err)

	_, err = querybus.Ask[GetBalance, Balance](ctx, queries, GetBalance{Account: "7"})
	fmt.Println(err, querybus.Outcome(err))

	_, err = queries.Dispatch(ctx, "not a query")
	fmt.Println(errors.Is(err, querybus.ErrUnknownQuery))
	// Output:
	// 100 <nil>
	// no account 7 not_found
	// true
}
