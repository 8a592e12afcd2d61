package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/outbox"
)

// relayState is one relay's line of `eskit relay status`.
type relayState struct {
	name   string
	status outbox.RelayStatus
	head   eventstore.Position
	// lagEvents estimates the records between the checkpoint and the head
	// (from the feed's sequence numbers, like eskit_relay_lag_events); lag
	// is how long the oldest of them has waited.
	lagEvents int64
	lag       time.Duration
}

// relayStatus shows what PostgreSQL holds about relays: the checkpoint, the
// store's head and the lag between them, and which relay, if any, holds
// the relay's lease (its holder, fencing token and expiry). It needs
// neither NATS nor a running relay.
func relayStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("relay status", "[name...] [flags]\n\nEach relay's leader (or none), checkpoint, the store's head and the lag between them,\nread from PostgreSQL alone. Without names: "+strconv.Quote(defaultRelayName)+", the name `eskit relay` runs as.")
	var pg pgFlags
	pg.register(fs)
	asJSON := fs.Bool("json", false, "print JSON lines, one per relay")
	names, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		names = []string{defaultRelayName}
	}
	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()

	states := make([]relayState, 0, len(names))
	for _, name := range names {
		st, err := outbox.ReadStatus(ctx, pool, pg.schema, name)
		if err != nil {
			return err
		}
		if !st.HasCheckpoint && !st.Leader {
			return fmt.Errorf("no relay %q in schema %q: it has no checkpoint and no leader, so none of that name ever led "+
				"(give the -name and -schema the relay runs with; `eskit relay` runs as %q by default)", name, pg.schema, defaultRelayName)
		}
		states = append(states, relayState{name: name, status: st})
	}
	// The head is read after the checkpoints, so that no checkpoint is
	// ahead of it.
	head, err := store.Head(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for i := range states {
		s := &states[i]
		s.head = head
		s.lagEvents = eventstore.EventsBetween(s.status.Checkpoint, head)
		if s.lagEvents == 0 {
			continue
		}
		recs, err := store.ReadAll(ctx, s.status.Checkpoint, 1)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			s.lag = max(now.Sub(recs[0].RecordedAt), 0)
		}
	}

	if *asJSON {
		for _, s := range states {
			var holder, token, expires any
			if s.status.Leader {
				holder, token, expires = s.status.Lease.Holder, s.status.Lease.Token, s.status.Lease.Expires
			}
			if err := jsonLine(c.stdout, map[string]any{
				"name": s.name, "schema": pg.schema, "leader": s.status.Leader,
				"leader_holder": holder, "leader_token": token, "leader_expires": expires,
				"checkpoint": s.status.Checkpoint.String(), "checkpoint_at": timeOrNil(s.status.CheckpointAt),
				"head": s.head.String(), "lag_events": s.lagEvents, "lag_seconds": s.lag.Seconds(),
			}); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(c.stdout, "NAME", "LEADER", "CHECKPOINT", "HEAD", "LAG EVENTS", "LAG", "CHECKPOINT WRITTEN")
	for _, s := range states {
		leader := "none: nothing is published"
		if s.status.Leader {
			leader = fmt.Sprintf("yes (holder %s, token %d, lease expires in %s)", s.status.Lease.Holder, s.status.Lease.Token,
				max(time.Until(s.status.Lease.Expires), 0).Round(time.Millisecond))
		}
		t.row(s.name, leader, s.status.Checkpoint, s.head, s.lagEvents, s.lag.Round(time.Millisecond),
			timeOrDash(s.status.CheckpointAt))
	}
	return t.flush()
}
