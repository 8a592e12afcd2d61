package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/api"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// testLogger logs warnings and errors to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// realServices gives a test its own database, Redis prefix and JetStream
// stream: an in-process server, or ESKIT_NATS_URL's when set.
func realServices(t *testing.T) *services {
	t.Helper()
	url, ok := natstest.ExternalURL()
	if !ok {
		url = natstest.Start(t).URL()
	}
	return realServicesOn(t, url)
}

// realServicesOn is realServices with the JetStream server at url.
func realServicesOn(t *testing.T, url string) *services {
	t.Helper()
	ctx := context.Background()
	pool := testsvc.Pool(t)
	rdb, prefix := testsvc.Redis(t)
	subject := strings.ReplaceAll(testsvc.Name("bank"), "_", "")
	svc := &services{subjectPrefix: subject, redisPrefix: prefix, rdb: rdb}
	t.Cleanup(svc.close)
	require.NoError(t, svc.initTelemetry())
	require.NoError(t, svc.usePool(ctx, pool, "eskit"))
	svc.js = natstest.JetStream(t, url)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.js.DeleteStream(ctx, svc.streamName())
	})
	return svc
}

// realServicesWith is realServices with the read models in Redis
// (readModelsRedis) or in the store's PostgreSQL (readModelsPostgres:
// then the services have no Redis at all).
func realServicesWith(t *testing.T, readModels string) *services {
	t.Helper()
	svc := realServices(t)
	if readModels == readModelsPostgres {
		svc.rdb, svc.readModels = nil, readModelsPostgres
	}
	return svc
}

// readModelKinds are the places the bank keeps its read models in, which
// its end-to-end tests run against.
var readModelKinds = []string{readModelsRedis, readModelsPostgres}

// startApp runs the bank with every role on svc and serves its API.
func startApp(t *testing.T, svc *services, opts appOptions) (*app, *httptest.Server) {
	t.Helper()
	a, srv, _ := launchApp(t, svc, opts, func(err error) { require.NoError(t, err) })
	return a, srv
}

// launchApp runs the bank with every role on svc, waits until its workers
// have started and serves its API. stop (idempotent, also run by the
// clean-up) closes the server, ends the workers, passes what they
// returned to check and closes the app.
func launchApp(t *testing.T, svc *services, opts appOptions, check func(error)) (*app, *httptest.Server, func()) {
	t.Helper()
	return launchRoles(t, svc, roleAll, opts, check)
}

// launchRoles is launchApp for the given roles.
func launchRoles(t *testing.T, svc *services, roles string, opts appOptions, check func(error)) (*app, *httptest.Server, func()) {
	t.Helper()
	if opts.tokens == nil {
		opts.tokens = testTokens(t)
	}
	rs, err := parseRoles(roles)
	require.NoError(t, err)
	a, err := newApp(context.Background(), svc, rs, testLogger(t), opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.runWorkers(ctx) }()
	var workers []interface{ Started() <-chan struct{} }
	if a.relay != nil {
		workers = append(workers, a.relay)
	}
	if a.runner != nil {
		workers = append(workers, a.runner)
	}
	if a.process != nil {
		workers = append(workers, a.process)
	}
	for _, w := range workers {
		select {
		case <-w.Started():
		case <-time.After(30 * time.Second):
			t.Fatal("the workers did not start")
		}
	}
	srv := httptest.NewServer(a.handler)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Close()
			cancel()
			check(<-done)
			a.close()
		})
	}
	t.Cleanup(stop)
	return a, srv, stop
}

// The API tokens of the tests: testToken is the principal tester's, the
// one a client uses unless told otherwise; otherToken is another caller's.
const (
	testToken      = "tester-token-0123456789abcdef"
	otherToken     = "intruder-token-0123456789abcdef"
	testPrincipal  = "tester"
	otherPrincipal = "intruder"
)

// testTokens returns the tests' API tokens.
func testTokens(t *testing.T) *api.Tokens {
	t.Helper()
	tokens, err := api.NewTokens(map[string]string{testToken: testPrincipal, otherToken: otherPrincipal})
	require.NoError(t, err)
	return tokens
}

// client talks JSON to the API, as the principal of its token (testToken
// when empty).
type client struct {
	t     *testing.T
	base  string
	svc   *services
	token string
}

// as returns the client acting with another token.
func (c client) as(token string) client {
	c.token = token
	return c
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "body: %s", r.body)
}

// errBody decodes an error answer.
func (r response) err(t *testing.T) map[string]string {
	t.Helper()
	var e map[string]string
	r.json(t, &e)
	require.NotEmpty(t, e["code"], "body: %s", r.body)
	require.NotEmpty(t, e["error"], "body: %s", r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	return e
}

func (c client) do(method, path string, body io.Reader, headers ...string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	require.NoError(c.t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+cmp.Or(c.token, testToken))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (c client) post(path, body string, headers ...string) response {
	c.t.Helper()
	return c.do(http.MethodPost, path, strings.NewReader(body), headers...)
}

func (c client) get(path string, headers ...string) response {
	c.t.Helper()
	return c.do(http.MethodGet, path, nil, headers...)
}

// created posts and expects status with an {"id","position"} answer.
func (c client) created(path, body string, status int, headers ...string) (id, pos string) {
	c.t.Helper()
	r := c.post(path, body, headers...)
	require.Equal(c.t, status, r.status, "body: %s", r.body)
	var out struct{ ID, Position string }
	r.json(c.t, &out)
	require.NotEmpty(c.t, out.ID)
	require.Equal(c.t, out.Position, r.header.Get("Eskit-Position"))
	return out.ID, out.Position
}

// applied posts an account command and expects 200 {"version","position"}.
func (c client) applied(path, body string, headers ...string) (version int64, pos string) {
	c.t.Helper()
	r := c.post(path, body, headers...)
	require.Equal(c.t, http.StatusOK, r.status, "body: %s", r.body)
	var out struct {
		Version  int64
		Position string
	}
	r.json(c.t, &out)
	require.Equal(c.t, out.Position, r.header.Get("Eskit-Position"))
	return out.Version, out.Position
}

// read gets path after waiting for pos and decodes the answer.
func (c client) read(path, pos string, v any) {
	c.t.Helper()
	r := c.get(path, "Eskit-Min-Position", pos)
	require.Equal(c.t, http.StatusOK, r.status, "body: %s", r.body)
	r.json(c.t, v)
}

// bytesOfSize returns a JSON body of at least n bytes.
func bytesOfSize(n int) string {
	var b bytes.Buffer
	b.WriteString(`{"owner":"`)
	b.WriteString(strings.Repeat("x", n))
	b.WriteString(`","currency":"EUR"}`)
	return b.String()
}

func stringsReader(s string) io.Reader {
	if s == "" {
		return http.NoBody
	}
	return strings.NewReader(s)
}
