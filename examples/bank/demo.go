package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/api"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/querybus"
)

// Markers of the demo's output around the two read-model dumps.
const (
	demoDumpBefore = "== read models =="
	demoDumpAfter  = "== read models after the rebuild =="
	demoDumpEnd    = "== end =="
)

// demoTimeout bounds the demo.
const demoTimeout = time.Minute

// readModels is everything the read models hold about the demo's accounts
// and transfers.
type readModels struct {
	Accounts     []readmodel.AccountSummary         `json:"accounts"`
	Transactions map[string][]readmodel.Transaction `json:"transactions"`
	Transfers    []readmodel.TransferStatus         `json:"transfers"`
	Stats        readmodel.Stats                    `json:"stats"`
}

// demo opens accounts, moves money (one transfer completes, one is
// refunded, one rejected), prints the read models, rebuilds every
// projection blue/green, and prints them again: they must be equal.
func (a *app) demo(ctx context.Context, out io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	workCtx, stopWork := context.WithCancel(ctx)
	workers := make(chan error, 1)
	go func() {
		err := a.runWorkers(workCtx)
		if err != nil {
			cancel() // a worker cannot work: the demo cannot either
		}
		workers <- err
	}()
	defer func() {
		stopWork()
		if werr := <-workers; werr != nil {
			err = werr
		}
	}()

	d := demoRun{app: a, out: out}
	alice := d.open(ctx, "Alice", 0)
	bob := d.open(ctx, "Bob", 0)
	carol := d.open(ctx, "Carol", 0)
	d.send(ctx, "Alice deposits 100.00 EUR", api.Deposit{AccountID: alice, Amount: 10000})
	d.send(ctx, "Bob deposits 50.00 EUR", api.Deposit{AccountID: bob, Amount: 5000})
	d.send(ctx, "Alice withdraws 15.00 EUR", api.Withdraw{AccountID: alice, Amount: 1500})
	t1 := d.transfer(ctx, "Alice sends Bob 30.00 EUR", alice, bob, 3000)
	d.send(ctx, "Carol's account is frozen", api.Freeze{AccountID: carol, Reason: "demo"})
	t2 := d.transfer(ctx, "Bob sends frozen Carol 20.00 EUR (the credit fails: refunded)", bob, carol, 2000)
	t3 := d.transfer(ctx, "Alice sends Carol 1000.00 EUR (more than she has: rejected)", alice, carol, 100000)
	if d.err != nil {
		return d.err
	}
	transfers := []uuid.UUID{t1, t2, t3}
	accounts := []uuid.UUID{alice, bob, carol}
	if err := d.settle(ctx, transfers, accounts); err != nil {
		return err
	}

	before, err := d.readModels(ctx, accounts, transfers)
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, demoDumpBefore)
	fmt.Fprintln(out, string(before))
	fmt.Fprintln(out, demoDumpEnd)

	fmt.Fprintln(out, "\nRebuilding every projection blue/green from the event store:")
	for _, name := range readmodel.Names {
		old, err := a.reader.Namespace(ctx, name)
		if err != nil {
			return err
		}
		for !a.runner.Active(name) {
			if backoff.Sleep(ctx, 20*time.Millisecond) != nil {
				return fmt.Errorf("demo: projection %s has no active runner: %w", name, ctx.Err())
			}
		}
		if err := a.runner.Rebuild(ctx, name); err != nil {
			return fmt.Errorf("demo: rebuild %s: %w", name, err)
		}
		now, err := a.reader.Namespace(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %-18s v%d -> v%d\n", name, old.Version, now.Version)
	}

	after, err := d.readModels(ctx, accounts, transfers)
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, demoDumpAfter)
	fmt.Fprintln(out, string(after))
	fmt.Fprintln(out, demoDumpEnd)
	equal := bytes.Equal(before, after)
	fmt.Fprintf(out, "\nThe read models are the same after the rebuild: %v\n", equal)
	if !equal {
		return errors.New("demo: the rebuilt read models differ")
	}
	return nil
}

// demoRun holds the demo's progress; the first error stops it.
type demoRun struct {
	app  *app
	out  io.Writer
	err  error
	last eventstore.Position
}

func (d *demoRun) dispatch(ctx context.Context, what string, cmd any) commandbus.Result {
	if d.err != nil {
		return commandbus.Result{}
	}
	res, err := d.app.commands.Dispatch(ctx, cmd)
	if err != nil {
		d.err = fmt.Errorf("demo: %s: %w", what, err)
		return res
	}
	if res.Position.After(d.last) {
		d.last = res.Position
	}
	return res
}

func (d *demoRun) send(ctx context.Context, what string, cmd any) {
	res := d.dispatch(ctx, what, cmd)
	if d.err == nil {
		fmt.Fprintf(d.out, "%-64s version %d, position %s\n", what, res.Version, res.Position)
	}
}

func (d *demoRun) open(ctx context.Context, owner string, overdraft int64) uuid.UUID {
	what := "open an account for " + owner + " in EUR"
	res := d.dispatch(ctx, what, api.OpenAccount{Owner: owner, Currency: "EUR", OverdraftLimit: overdraft})
	id, _ := parseStreamID(res.StreamID)
	if d.err == nil {
		fmt.Fprintf(d.out, "%-64s %s\n", what, id)
	}
	return id
}

func (d *demoRun) transfer(ctx context.Context, what string, from, to uuid.UUID, amount int64) uuid.UUID {
	res := d.dispatch(ctx, what, api.RequestTransfer{From: from, To: to, Amount: amount})
	id, _ := parseStreamID(res.StreamID)
	if d.err == nil {
		fmt.Fprintf(d.out, "%-64s transfer %s\n", what, id)
	}
	return id
}

// settle waits until the transfer process has finished every transfer and
// settled the source accounts, and the projections have applied it all.
func (d *demoRun) settle(ctx context.Context, transfers, accounts []uuid.UUID) error {
	fmt.Fprintln(d.out, "\nWaiting for the transfer process and the projections...")
	for _, id := range transfers {
		for {
			t, err := querybus.Ask[readmodel.GetTransfer, readmodel.TransferStatus](
				querybus.WithMinPosition(ctx, "", d.last), d.app.queries, readmodel.GetTransfer{ID: id})
			if err != nil {
				return fmt.Errorf("demo: transfer %s: %w", id, err)
			}
			if t.Final() {
				fmt.Fprintf(d.out, "  transfer %s: %s %s\n", id, t.Status, t.Reason)
				break
			}
			if backoff.Sleep(ctx, 20*time.Millisecond) != nil {
				return fmt.Errorf("demo: transfer %s stays %s: %w", id, t.Status, ctx.Err())
			}
		}
	}
	// Every transfer is over; once no account has money in flight at the
	// store's head, the process has settled or refunded every debit, and
	// nothing more will be written.
	for {
		head, err := d.app.svc.store.Head(ctx)
		if err != nil {
			return err
		}
		settled := true
		for _, id := range accounts {
			acc, err := querybus.Ask[readmodel.GetAccount, readmodel.AccountSummary](
				querybus.WithMinPosition(ctx, "", head), d.app.queries, readmodel.GetAccount{ID: id})
			if err != nil {
				return fmt.Errorf("demo: account %s: %w", id, err)
			}
			settled = settled && acc.InFlight == 0
		}
		if settled {
			break
		}
		if backoff.Sleep(ctx, 20*time.Millisecond) != nil {
			return fmt.Errorf("demo: transfers stay in flight: %w", ctx.Err())
		}
	}
	head, err := d.app.svc.store.Head(ctx)
	if err != nil {
		return err
	}
	for _, name := range readmodel.Names {
		if err := d.app.runner.WaitFor(ctx, name, head); err != nil {
			return fmt.Errorf("demo: wait for %s: %w", name, err)
		}
	}
	return nil
}

// readModels reads everything the read models hold about the accounts and
// transfers, as indented JSON.
func (d *demoRun) readModels(ctx context.Context, accounts, transfers []uuid.UUID) ([]byte, error) {
	q := d.app.queries
	rm := readModels{Transactions: map[string][]readmodel.Transaction{}}
	for _, id := range accounts {
		acc, err := querybus.Ask[readmodel.GetAccount, readmodel.AccountSummary](ctx, q, readmodel.GetAccount{ID: id})
		if err != nil {
			return nil, err
		}
		rm.Accounts = append(rm.Accounts, acc)
		// Page through the history two at a time, as a client would.
		all := []readmodel.Transaction{}
		cursor := ""
		for {
			page, err := querybus.Ask[readmodel.ListTransactions, readmodel.TransactionPage](ctx, q,
				readmodel.ListTransactions{AccountID: id, Limit: 2, Cursor: cursor})
			if err != nil {
				return nil, err
			}
			all = append(all, page.Transactions...)
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		rm.Transactions[acc.Owner] = all
	}
	for _, id := range transfers {
		t, err := querybus.Ask[readmodel.GetTransfer, readmodel.TransferStatus](ctx, q, readmodel.GetTransfer{ID: id})
		if err != nil {
			return nil, err
		}
		rm.Transfers = append(rm.Transfers, t)
	}
	stats, err := querybus.Ask[readmodel.GetStats, readmodel.Stats](ctx, q, readmodel.GetStats{})
	if err != nil {
		return nil, err
	}
	rm.Stats = stats
	return json.MarshalIndent(rm, "", "  ")
}
