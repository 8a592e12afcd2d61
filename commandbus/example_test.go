package commandbus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
)

// Deposit is a command that carries its own ID.
type Deposit struct {
	ID      uuid.UUID
	Account string
	Amount  int64
}

// CommandID identifies the command (commandbus.Identified).
func (d Deposit) CommandID() uuid.UUID { return d.ID }

// Validate rejects impossible deposits (commandbus.Validator).
func (d Deposit) Validate() error {
	if d.Amount <= 0 {
		return errors.New("amount must be positive")
	}
	return nil
}

func Example() {
	bus := commandbus.New(commandbus.WithMiddleware(
		commandbus.Validation(),
		commandbus.Idempotency(commandbus.NewMemoryStore(time.Hour)),
		commandbus.Timeout(5*time.Second),
		commandbus.Retry(commandbus.RetryPolicy{}),
	))
	version := int64(0)
	_ = commandbus.Register(bus, func(ctx context.Context, d Deposit) (commandbus.Result, error) {
		// A real handler calls the aggregate repository here, passing
		// commandbus.CommandIDFrom(ctx) on as its command ID.
		version++
		return commandbus.Result{StreamID: "account-" + d.Account, Version: version, Position: eventstore.Position{Tx: 812, Seq: uint64(version)}}, nil
	})

	ctx := context.Background()
	cmd := Deposit{ID: uuid.New(), Account: "42", Amount: 100}
	res, err := commandbus.Send(ctx, bus, cmd)
	fmt.Println(res.StreamID, res.Version, res.Position, res.Duplicate, err)

	// The same command again: answered with the first result, not run twice.
	res, err = commandbus.Send(ctx, bus, cmd)
	fmt.Println(res.StreamID, res.Version, res.Position, res.Duplicate, err)

	_, err = commandbus.Send(ctx, bus, Deposit{ID: uuid.New(), Account: "42"})
	fmt.Println(errors.Is(err, commandbus.ErrValidation), err)

	_, err = bus.Dispatch(ctx, "not a command")
	fmt.Println(errors.Is(err, commandbus.ErrUnknownCommand))
	// Output:
	// account-42 1 812-1 false <nil>
	// account-42 1 812-1 true <nil>
	// true commandbus: invalid commandbus_test.Deposit: amount must be positive
	// true
}

func ExampleMetadataFrom() {
	ctx := commandbus.WithCorrelationID(context.Background(), "request-7")
	ctx = commandbus.WithCausationID(ctx, "event-3")
	// aggregate.WithMetadataFrom(commandbus.MetadataFrom) stamps these on
	// every event a command causes.
	md := commandbus.MetadataFrom(ctx)
	fmt.Println(md[eventstore.MetaCorrelationID], md[eventstore.MetaCausationID])
	// Output: request-7 event-3
}

// A middleware wraps every command's handler: here, an audit line per
// command. Middleware runs in the order given, the first outermost.
func ExampleMiddleware() {
	audit := func(next commandbus.Handler) commandbus.Handler {
		return func(ctx context.Context, cmd any) (commandbus.Result, error) {
			res, err := next(ctx, cmd)
			fmt.Printf("audit: %T on %s: err=%v\n", cmd, res.StreamID, err)
			return res, err
		}
	}
	bus := commandbus.New(commandbus.WithMiddleware(audit, commandbus.Validation()))
	_ = commandbus.Register(bus, func(ctx context.Context, d Deposit) (commandbus.Result, error) {
		return commandbus.Result{StreamID: "account-" + d.Account, Version: 1}, nil
	})

	_, _ = commandbus.Send(context.Background(), bus, Deposit{ID: uuid.New(), Account: "7", Amount: 5})
	_, _ = commandbus.Send(context.Background(), bus, Deposit{ID: uuid.New(), Account: "7"})
	// Output:
	// audit: commandbus_test.Deposit on account-7: err=<nil>
	// audit: commandbus_test.Deposit on : err=commandbus: invalid commandbus_test.Deposit: amount must be positive
}
