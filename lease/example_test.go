package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/eskit/eskit/lease"
)

// A Keeper runs the guarded work while it holds the lease; the work's
// writes carry the fencing token, and a resource refuses a deposed
// holder's.
func Example() {
	store := lease.NewMemoryStore() // pgstore's store.Leases() or redislease.New(rdb) in production
	k, err := lease.NewKeeper(store, "transfers", lease.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Println(err)
		return
	}
	var ledger lease.Fence // the guarded resource remembers the highest token it accepted
	ctx, cancel := context.WithCancel(context.Background())
	err = k.Run(ctx, func(ctx context.Context, h *lease.Held) error {
		defer cancel() // one round, for the example; real work runs until ctx ends
		if err := h.Err(); err != nil {
			return err // lost: stop before writing
		}
		return ledger.Write(h.Lease(), func() error {
			fmt.Println("leader writes with token", h.Token())
			return nil
		})
	})
	fmt.Println("run returned", err)

	// A holder that froze with an older token is refused.
	stale := lease.Lease{Name: "transfers", Holder: "frozen", Token: 0}
	err = ledger.Write(stale, func() error { return nil })
	fmt.Println("stale write fenced:", errors.Is(err, lease.ErrFenced))
	// Output:
	// leader writes with token 1
	// run returned <nil>
	// stale write fenced: true
}
