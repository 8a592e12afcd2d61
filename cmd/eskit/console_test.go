package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// syncBuffer is an io.Writer read while another goroutine writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eskit console on the CLI's flags: loopback by default, a generated
// token printed in its sign-in link, the projections of the prefix shown,
// and a clean stop on interrupt.
func TestConsoleCommand(t *testing.T) {
	url, _, store := newCommandStore(t)
	rdb, prefix := testsvc.Redis(t)
	counts := projection.New("counts", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
		b.Pipe().HIncrBy(ctx, b.Key("count"), rec.StreamID, 1)
		return nil
	})
	runCounts(t, projection.Redis(rdb), prefix, store, counts)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"console", "-postgres-url", url, "-redis-url", testsvc.RedisURL(), "-prefix", prefix,
			"-addr", "127.0.0.1:0"}, &out, &errOut)
	}()
	link := regexp.MustCompile(`http://127\.0\.0\.1:\d+/\?token=[0-9a-f]{40}`)
	require.Eventually(t, func() bool { return link.MatchString(out.String()) }, 30*time.Second, 20*time.Millisecond,
		"no sign-in link printed: %s %s", out.String(), errOut.String())
	signIn := link.FindString(out.String())
	base := signIn[:strings.Index(signIn, "/?token=")]

	res, err := http.Get(base + "/")
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "no token, no console")
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	res, err = c.Get(signIn)
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, string(body), "counts")
	require.Contains(t, string(body), "postgres")

	// The live feed streams until the console stops.
	res, err = c.Get(base + "/live/events")
	require.NoError(t, err)
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, ": eskit live feed\n", line)
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatal("eskit console did not stop")
	}
	_ = res.Body.Close()
}

func TestConsoleRefusesAShortToken(t *testing.T) {
	code, _, errOut := eskit(t, "console", "-postgres-url", "postgres://127.0.0.1:1/x", "-token", "short")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "at least 16 characters")
}
