package pgstore

import (
	"context"
	"iter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
)

// Subscribe implements eventstore.Store on eventstore.CatchUp. Once caught
// up, a subscription waits for a wake-up: in-process right after a commit
// of this Store, from other processes through LISTEN (see WithNotify), or
// from its own polling. When a wake-up finds nothing new, the events are
// committed but behind the feed's safe point (an older transaction is still
// running, and its end notifies nobody), so the subscription polls quickly,
// backing off towards the poll interval, until they appear.
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		if err := s.checkOpen(); err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		if s.notify {
			s.startListener()
		}
		w := &waiter{s: s, ch: s.signal(), last: after}
		for r, err := range eventstore.CatchUp(ctx, s, after, s.batch, w.wait) {
			if !yield(r, err) {
				return
			}
		}
	}
}

// signal returns the channel the next wake-up closes.
func (s *Store) signal() <-chan struct{} {
	s.sigMu.Lock()
	defer s.sigMu.Unlock()
	return s.changed
}

// wake wakes this process's subscribers.
func (s *Store) wake() {
	s.sigMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.sigMu.Unlock()
}

// committed wakes subscribers after a commit of this Store: in-process at
// once, and in other processes through a coalesced notification.
func (s *Store) committed() {
	s.wake()
	if s.notify && !s.closed.Load() {
		select {
		case s.kick <- struct{}{}:
		default: // a notification is already due; it covers this commit too
		}
	}
}

// notifier sends one NOTIFY per batch of commits: while a notification is
// in flight, and for the notify interval after it, further commits coalesce
// into the next one. Each runs in its
// own short transaction, never in an append's, so appends never queue
// behind the notification lock; it skips the commit flush, since a lost
// wake-up only costs a poll. The transaction is one prepared statement:
// set_config's local setting still holds when its implicit transaction
// commits.
func (s *Store) notifier() {
	const sql = `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		_, err := s.pool.Exec(ctx, sql, s.channel, s.instance)
		cancel()
		if err != nil && s.ctx.Err() == nil {
			s.log.Warn("pgstore: notify subscribers", "schema", s.schema, "err", err)
		}
		if s.notifyEvery > 0 {
			t := time.NewTimer(s.notifyEvery)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// startListener starts, once, the goroutine that LISTENs for other
// processes' commits on a dedicated connection.
func (s *Store) startListener() {
	s.listenerOnce.Do(func() {
		if s.ctx.Err() != nil {
			return
		}
		s.wg.Go(s.listen)
	})
}

// listenBackoff is the listener's reconnection schedule: 50 ms doubling up
// to 5 s, jittered so that the listeners of many processes reconnect apart
// after a server restart.
var listenBackoff = backoff.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}

func (s *Store) listen() {
	retries := backoff.New(listenBackoff)
	for s.ctx.Err() == nil {
		err := s.listenOnce()
		if s.ctx.Err() != nil {
			return
		}
		wait := retries.Next()
		s.log.Warn("pgstore: listener lost its connection; subscribers poll until it is back", "schema", s.schema, "err", err, "retry_in", wait)
		if backoff.Sleep(s.ctx, wait) != nil {
			return
		}
	}
}

// listenOnce connects, LISTENs and relays notifications until the
// connection fails or the store closes.
func (s *Store) listenOnce() error {
	cfg := s.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(s.ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()
	if _, err := conn.Exec(s.ctx, `LISTEN "`+s.channel+`"`); err != nil {
		return err
	}
	// Commits made while no connection listened are found by this read.
	s.wake()
	for {
		n, err := conn.WaitForNotification(s.ctx)
		if err != nil {
			return err
		}
		if n.Payload != s.instance {
			s.wake()
		}
	}
}

// waiter is one subscription's eventstore.WaitFunc.
type waiter struct {
	s *Store
	// ch is the wake-up channel taken before the subscription's last read,
	// so that a commit during the read is never missed.
	ch     <-chan struct{}
	last   eventstore.Position
	woken  bool          // the last wait ended with a wake-up
	behind bool          // a wake-up found nothing: events wait behind the safe point
	delay  time.Duration // current quick-polling delay
}

func (w *waiter) wait(ctx context.Context, after eventstore.Position) error {
	if after != w.last {
		w.last, w.behind, w.delay = after, false, 0
	} else if w.woken {
		w.behind = true
	}
	d := w.s.pollMax
	if w.behind {
		if w.delay == 0 {
			w.delay = w.s.pollMin
		} else {
			w.delay = min(w.delay*2, w.s.pollMax)
		}
		d = w.delay
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w.s.ctx.Done():
		return eventstore.ErrClosed
	case <-w.ch:
		w.woken = true
	case <-t.C:
		w.woken = false
	}
	w.ch = w.s.signal()
	return nil
}
