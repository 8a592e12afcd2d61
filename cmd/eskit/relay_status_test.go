package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// relayStatusLine is a line of `eskit relay status -json`.
type relayStatusLine struct {
	Name          string     `json:"name"`
	Schema        string     `json:"schema"`
	Leader        bool       `json:"leader"`
	LeaderHolder  *string    `json:"leader_holder"`
	LeaderToken   *uint64    `json:"leader_token"`
	LeaderExpires *time.Time `json:"leader_expires"`
	Checkpoint    string     `json:"checkpoint"`
	CheckpointAt  *time.Time `json:"checkpoint_at"`
	Head          string     `json:"head"`
	LagEvents     int64      `json:"lag_events"`
	LagSeconds    float64    `json:"lag_seconds"`
}

// relayStatusJSON runs `eskit relay status args...` and decodes its lines.
func relayStatusJSON(t *testing.T, args ...string) []relayStatusLine {
	t.Helper()
	sts, err := tryRelayStatusJSON(t, args...)
	require.NoError(t, err)
	return sts
}

// tryRelayStatusJSON is relayStatusJSON for a condition that is polled:
// it returns the failure instead of ending the test.
func tryRelayStatusJSON(t *testing.T, args ...string) ([]relayStatusLine, error) {
	t.Helper()
	code, out, errOut := eskit(t, append([]string{"relay", "status"}, args...)...)
	if code != 0 {
		return nil, fmt.Errorf("exit %d: %s", code, errOut)
	}
	var sts []relayStatusLine
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var st relayStatusLine
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		sts = append(sts, st)
	}
	return sts, nil
}

// TestRelayStatus runs relays (`eskit relay`) against real PostgreSQL and an
// in-process JetStream, and checks what `eskit relay status` reports while
// they lead and after they stopped: checkpoint, head, lag, leader.
func TestRelayStatus(t *testing.T) {
	url := testsvc.Database(t)
	srv := natstest.Start(t)
	code, _, errOut := eskit(t, "migrate", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)
	ctx := context.Background()
	pool := testsvc.PoolFor(t, url)
	store, err := pgstore.New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(store.Close)
	appendN := func(n int, tag string) {
		t.Helper()
		for i := range n {
			_, err := store.Append(ctx, "account-"+tag+string(rune('a'+i)), eventstore.NoStream,
				eventstore.Event{Type: "Opened", Data: []byte(`{}`)})
			require.NoError(t, err)
		}
	}
	appendN(5, "x")

	// No relay has run: the name is unknown.
	code, out, errOut := eskit(t, "relay", "status", "-postgres-url", url)
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, `no relay "relay" in schema "eskit"`)

	// Two relays: one under the default name, one named "audit".
	startRelay := func(args ...string) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan int, 1)
		var out, errBuf lockedBuffer
		go func() {
			done <- run(rctx, append([]string{"relay", "-postgres-url", url, "-nats-url", srv.URL(), "-stats-interval", "0"}, args...), &out, &errBuf)
		}()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("relay %v:\n%s", args, errBuf.String())
			}
		})
		return func() {
			cancel()
			require.Equal(t, 0, <-done, errBuf.String())
		}
	}
	stopDefault := startRelay("-prefix", "bank")
	stopAudit := startRelay("-prefix", "audit", "-name", "audit")
	head := testsvc.SettledHead(t, store)
	caughtUp := func(names ...string) func() bool {
		return func() bool {
			// Until a relay first leads, its name is unknown.
			sts, err := tryRelayStatusJSON(t, append(names, "-json", "-postgres-url", url)...)
			if err != nil {
				return false
			}
			for _, st := range sts {
				if !st.Leader || st.Checkpoint != head.String() {
					return false
				}
			}
			return len(sts) == len(names)
		}
	}
	require.Eventually(t, caughtUp("relay", "audit"), 20*time.Second, 50*time.Millisecond)

	// Flags after the names; several names, in their order.
	sts := relayStatusJSON(t, "audit", "-json", "relay", "-postgres-url", url)
	require.Len(t, sts, 2)
	require.Equal(t, "audit", sts[0].Name)
	require.Equal(t, "relay", sts[1].Name)
	for _, st := range sts {
		require.Equal(t, "eskit", st.Schema)
		require.True(t, st.Leader)
		require.NotNil(t, st.LeaderHolder)
		require.NotEmpty(t, *st.LeaderHolder)
		require.NotNil(t, st.LeaderToken)
		require.Positive(t, *st.LeaderToken)
		require.NotNil(t, st.LeaderExpires)
		require.WithinDuration(t, time.Now(), *st.LeaderExpires, time.Minute)
		require.Equal(t, head.String(), st.Checkpoint)
		require.Equal(t, head.String(), st.Head)
		require.Zero(t, st.LagEvents)
		require.Zero(t, st.LagSeconds)
		require.NotNil(t, st.CheckpointAt)
	}
	require.NotEqual(t, *sts[0].LeaderHolder, *sts[1].LeaderHolder, "each relay holds its own lease")
	// Without names: the default relay.
	sts = relayStatusJSON(t, "-postgres-url", url, "-json")
	require.Len(t, sts, 1)
	require.Equal(t, "relay", sts[0].Name)

	// The table, with the flags before the name.
	code, out, errOut = eskit(t, "relay", "status", "-postgres-url", url, "audit")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	for _, col := range []string{"NAME", "LEADER", "CHECKPOINT", "HEAD", "LAG EVENTS", "LAG", "CHECKPOINT WRITTEN"} {
		require.Contains(t, lines[0], col)
	}
	require.True(t, strings.HasPrefix(lines[1], "audit "), lines[1])
	require.Contains(t, lines[1], "yes (holder ")
	require.Contains(t, lines[1], ", token ")
	require.Contains(t, lines[1], head.String())

	// The audit relay stops; events come in: it falls behind, with no
	// leader, while the default relay keeps up.
	stopAudit()
	appendN(4, "y")
	head = testsvc.SettledHead(t, store)
	require.Eventually(t, caughtUp("relay"), 20*time.Second, 50*time.Millisecond)
	// The stopped relay released its lease.
	require.Eventually(t, func() bool {
		sts, err = tryRelayStatusJSON(t, "audit", "relay", "-json", "-postgres-url", url)
		return err == nil && !sts[0].Leader
	}, 10*time.Second, 20*time.Millisecond)
	require.False(t, sts[0].Leader)
	require.Nil(t, sts[0].LeaderHolder)
	require.Nil(t, sts[0].LeaderToken)
	require.Nil(t, sts[0].LeaderExpires)
	require.Equal(t, head.String(), sts[0].Head)
	require.NotEqual(t, head.String(), sts[0].Checkpoint)
	require.EqualValues(t, 4, sts[0].LagEvents)
	require.Positive(t, sts[0].LagSeconds)
	require.True(t, sts[1].Leader)
	require.Zero(t, sts[1].LagEvents)

	code, out, errOut = eskit(t, "relay", "status", "audit", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "none: nothing is published")
	require.Contains(t, out, "  4  ")

	stopDefault()
	require.Eventually(t, func() bool {
		sts, err = tryRelayStatusJSON(t, "-json", "-postgres-url", url)
		return err == nil && !sts[0].Leader
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, head.String(), sts[0].Checkpoint)

	// An unknown name among known ones fails, naming it; so does a schema
	// without the relays.
	code, _, errOut = eskit(t, "relay", "status", "relay", "nope", "-postgres-url", url)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `no relay "nope" in schema "eskit"`)
	code, _, errOut = eskit(t, "relay", "status", "relay", "-schema", "other", "-postgres-url", url)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "migrat")
}
