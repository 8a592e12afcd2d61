package bench

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(lat, 50))
	require.Equal(t, 99*time.Millisecond, percentile(lat, 99))
	require.Equal(t, 100*time.Millisecond, percentile(lat, 100))
	require.Equal(t, time.Duration(0), percentile(nil, 99))
	require.Equal(t, 7*time.Millisecond, percentile([]time.Duration{7 * time.Millisecond}, 99))
}

func TestTargets(t *testing.T) {
	r := result("append-1", "commands/s", 900, 1000, nil).withTarget(target{ratio: true, min: true, bound: 0.9})
	tgt, met := r.Target()
	require.Equal(t, "ratio ≥ 0.9", tgt)
	require.True(t, met)
	require.InDelta(t, 0.9, *r.Ratio, 1e-9)

	r = result("relay", "events/s", 70, 100, nil).withTarget(target{ratio: true, min: true, bound: 0.8})
	_, met = r.Target()
	require.False(t, met)

	r = result("e2e-latency", "ms", 25, 0, nil).withTarget(target{bound: 20})
	tgt, met = r.Target()
	require.Equal(t, "eskit ≤ 20", tgt)
	require.False(t, met)
	require.Nil(t, r.Baseline)
	require.Nil(t, r.Ratio)

	r = result("project-rebuild", "events/s", 150_000, 200_000, nil).withTarget(target{min: true, bound: 100_000})
	tgt, met = r.Target()
	require.Equal(t, "eskit ≥ 100000", tgt)
	require.True(t, met)

	live := target{ratio: true, min: true, bound: 0.8, maxRSS: 2}
	r = result("project-live", "events/s", 90, 100, nil).withTarget(live)
	tgt, _ = r.Target()
	require.Equal(t, "ratio ≥ 0.8, rss ≤ 2×", tgt)
	r.Params["peak_memory"] = Memory{RSSEskit: 300 << 20, RSSBase: 100 << 20}
	require.False(t, live.met(r), "RSS 3× the baseline's misses the target")
	r.Params["peak_memory"] = Memory{RSSEskit: 150 << 20, RSSBase: 100 << 20}
	require.True(t, live.met(r))
}

func TestAlternate(t *testing.T) {
	ctx := context.Background()
	mem := newMemProbe()
	defer mem.close()
	var eskit, base atomic.Int64
	var order []side
	record := func(s side, n *atomic.Int64) op {
		return func(context.Context, int, int) error {
			n.Add(1)
			if len(order) == 0 || order[len(order)-1] != s {
				order = append(order, s)
			}
			time.Sleep(100 * time.Microsecond)
			return nil
		}
	}
	te, tb, err := alternate(ctx, mem, 40, 4, 1, true, record(sideEskit, &eskit), record(sideBase, &base))
	require.NoError(t, err)
	require.EqualValues(t, 40, eskit.Load())
	require.EqualValues(t, 40, base.Load())
	require.Len(t, te.lat, 40)
	require.Len(t, tb.lat, 40)
	require.Positive(t, te.total)
	// Rounds alternate, and every other round starts with the baseline:
	// E B | B E | E B | B E.
	require.Equal(t, []side{sideEskit, sideBase, sideEskit, sideBase, sideEskit}, order)
	m := mem.peaks()
	require.Positive(t, m.HeapEskit)
	require.Positive(t, m.HeapBase)

	boom := errors.New("boom")
	_, _, err = alternate(ctx, mem, 10, 2, 4, false, func(context.Context, int, int) error { return nil },
		func(_ context.Context, _, i int) error {
			if i == 3 {
				return boom
			}
			return nil
		})
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "baseline")
}

func TestSelectCases(t *testing.T) {
	all, err := selectCases(nil)
	require.NoError(t, err)
	require.Len(t, all, len(CaseNames()))
	some, err := selectCases([]string{"relay", "append-1"})
	require.NoError(t, err)
	require.Equal(t, "append-1", some[0].name)
	require.Equal(t, "relay", some[1].name)
	_, err = selectCases([]string{"nope"})
	require.ErrorContains(t, err, `unknown case "nope"`)
}

func TestInfoField(t *testing.T) {
	info := "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n"
	require.Equal(t, "7.0.15", infoField(info, "redis_version"))
	require.Equal(t, "", infoField(info, "nope"))
}

// TestRunCleansUp runs two small cases and checks that the run's database,
// Redis keys and JetStream streams are gone afterwards.
func TestRunCleansUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	natsURL, _ := natstest.ExternalURL()
	if natsURL == "" {
		natsURL = natstest.Start(t).URL()
	}
	b, err := Open(ctx, Config{
		PostgresURL: testsvc.PostgresURL(), RedisURL: testsvc.RedisURL(), NATSURL: natsURL,
		Cases: []string{"append-100", "project-live"},
		Sizes: Sizes{Rounds: 2, Append100: 4, Project: 500},
	})
	require.NoError(t, err)
	v := b.Versions()
	require.NotEmpty(t, v.Postgres)
	require.NotEmpty(t, v.NATS)
	require.NotEmpty(t, v.Redis)
	var results []Result
	require.NoError(t, b.Run(ctx, func(r Result) error { results = append(results, r); return nil }))
	require.Len(t, results, 2)
	for _, r := range results {
		require.Positive(t, r.Eskit, r.Name)
		require.NotNil(t, r.Baseline, r.Name)
		_, ok := r.Memory()
		require.True(t, ok)
	}
	require.Equal(t, "append-100", results[0].Name)
	tgt, _ := results[0].Target()
	require.Equal(t, "ratio ≥ 0.9", tgt)

	u, err := url.Parse(b.env.dbURL)
	require.NoError(t, err)
	db := strings.TrimPrefix(u.Path, "/")
	prefix, streams := b.env.prefix, b.env.streams
	require.NotEmpty(t, streams)
	require.NoError(t, b.env.rdb.Set(ctx, prefix+"left-over", "1", 0).Err())

	require.NoError(t, b.Close(ctx))

	conn, err := pgx.Connect(ctx, testsvc.PostgresURL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", db).Scan(&n))
	require.Zero(t, n, "database %s dropped", db)

	other, _ := testsvc.Redis(t)
	keys, err := other.Keys(ctx, prefix+"*").Result()
	require.NoError(t, err)
	require.Empty(t, keys)

	js2 := natstest.JetStream(t, natsURL)
	for _, s := range streams {
		_, err := js2.Stream(ctx, s)
		require.Error(t, err, "stream %s deleted", s)
	}
}
