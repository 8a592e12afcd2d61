package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/console"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/saga"
)

const (
	schema = "eskit"
	token  = "console-test-token-0123456789"
	// hostile is a stream ID and payload text that would run script if
	// the console did not escape it.
	hostile = `acct-<img src=x onerror="window.__xss=1">`
)

// fixture is a store with events, a projection kept by a runner (one of
// its records parked), a saga store, and a console on all of them.
type fixture struct {
	t       *testing.T
	store   *pgstore.Store
	srv     *httptest.Server
	failing atomic.Bool
	runner  *projection.Runner
}

func newFixture(t *testing.T, sagaStore ...console.Sagas) *fixture {
	t.Helper()
	ctx := t.Context()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, schema))
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	var sagas console.Sagas
	if len(sagaStore) > 0 {
		sagas = sagaStore[0]
	} else {
		pgSagas, err := pgstore.NewSagaStore(pool, schema)
		require.NoError(t, err)
		sagas = pgSagas
	}
	rdb, prefix := testsvc.Redis(t)
	f := &fixture{t: t, store: store}
	f.failing.Store(true)

	counts := projection.New("counts", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
		if rec.Type == "test.Poison" && f.failing.Load() {
			return projection.Permanent(fmt.Errorf("cannot apply %s: <b>poison</b>", rec.Type))
		}
		b.Pipe().HIncrBy(ctx, b.Key("count"), rec.StreamID, 1)
		return nil
	})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	f.runner, err = projection.NewRunner(rdb, store, []projection.Projection{counts}, projection.WithPrefix(prefix),
		projection.WithLogger(log), projection.WithAttempts(1), projection.WithPollInterval(20*time.Millisecond),
		projection.WithBackoffPolicy(backoff.Policy{Initial: time.Millisecond, Max: 10 * time.Millisecond}),
		projection.WithLease(time.Second, 0))
	require.NoError(t, err)
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.runner.Run(rctx) }()
	t.Cleanup(func() { stop(); require.NoError(t, <-done) })

	con, err := console.New(console.Config{
		Store: store, Projections: projection.NewReader(rdb, prefix, store), Sagas: sagas, Token: token, Logger: log,
		Relays: []string{"relay"}, Sample: 100 * time.Millisecond,
		RelayStatus: func(ctx context.Context, name string) (outbox.RelayStatus, error) {
			return outbox.ReadStatus(ctx, pool, schema, name)
		},
		Health: []console.Check{{Name: "postgres", Check: pool.Ping}, {Name: "redis", Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}},
	})
	require.NoError(t, err)
	cctx, cstop := context.WithCancel(context.Background())
	cdone := make(chan struct{})
	go func() { defer close(cdone); _ = con.Run(cctx) }()
	f.srv = httptest.NewServer(con.Handler())
	t.Cleanup(func() { f.srv.Close(); cstop(); <-cdone; con.Close() })
	return f
}

func (f *fixture) append(stream, typ string, data any) eventstore.AppendResult {
	f.t.Helper()
	b, err := json.Marshal(data)
	require.NoError(f.t, err)
	res, err := f.store.Append(f.t.Context(), stream, eventstore.Any, eventstore.Event{ID: eventstore.NewEventID(), Type: typ, Data: b})
	require.NoError(f.t, err)
	return res
}

func (f *fixture) caughtUp() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(f.t, f.runner.WaitFor(ctx, "counts", testsvc.SettledHead(f.t, f.store)))
}

// chromium returns the browser's path; without one the test is skipped
// (make test installs Debian's chromium package).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium on this machine: install Debian's chromium package (make test does) to run the browser tests")
	return ""
}

// browser starts a headless Chromium; dialogs (the actions'
// confirmations) are accepted.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1000), chromedp.Flag("headless", "new"))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	tctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	require.NoError(t, chromedp.Do(tctx))
	dialogs := chromedp.Events(tctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			go func() {
				_, _ = chromedp.Call(tctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}()
	return tctx
}

// do runs browser actions.
func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, actions...))
}

// open navigates to path and waits for sel.
func open(t *testing.T, ctx context.Context, base, path, sel string) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// shot saves a screenshot of the page under the test's artifacts (or
// ESKIT_CONSOLE_SCREENSHOTS).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	dir := t.ArtifactDir()
	if d := os.Getenv("ESKIT_CONSOLE_SCREENSHOTS"); d != "" {
		dir = d
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// text is the text of the first element sel matches, once the page
// has one (a query that races with a page still loading is retried).
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			require.NoError(t, err, "the text of %s", sel)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// poll waits until the expression is true, across navigations (a form
// posted, a page reloaded).
func poll(t *testing.T, ctx context.Context, expr string, within time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last error: %v)", msg, within, last)
}

func click(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	do(t, ctx, chromedp.Click(chromedp.CSS(sel)))
}

// noXSS fails when a hostile value ran as script on the page.
func noXSS(t *testing.T, ctx context.Context) {
	t.Helper()
	ran, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__xss === 1`))
	require.NoError(t, err)
	require.False(t, ran, "a stream ID or payload ran as script")
}

// The console in a real browser: it renders what was appended, escapes
// hostile stream IDs and payloads, shows a new event in the live feed
// within a second, and retries, skips and rebuilds through the UI.
func TestConsoleInABrowser(t *testing.T) {
	f := newFixture(t)
	ctx := browser(t)
	id := uuid.NewString()
	for i := range 3 {
		f.append("account-"+id, "bank.Deposited", map[string]any{"amount": 100 * (i + 1)})
	}
	hostileRes := f.append(hostile, "bank.Opened", map[string]any{"owner": `<script>window.__xss=1</script>`, "note": `<img src=x onerror="window.__xss=1">`})
	poison := f.append("account-poison", "test.Poison", map[string]any{"why": "fails"})
	f.append("account-poison2", "test.Poison", map[string]any{"why": "fails too"})
	f.caughtUp()

	// Signing in with the link's token; the token leaves the URL.
	open(t, ctx, f.srv.URL, "/?token="+token, "h1")
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	require.Equal(t, f.srv.URL+"/", loc)
	require.Equal(t, "Overview", text(t, ctx, "h1"))
	require.Contains(t, text(t, ctx, "table.checks"), "postgres")
	require.Contains(t, text(t, ctx, "main"), "counts")
	time.Sleep(300 * time.Millisecond) // a few samples for the charts
	do(t, ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	shot(t, ctx, "overview")

	// Streams: search by category, hostile IDs as text.
	open(t, ctx, f.srv.URL, "/streams?category=account", "#streams")
	streams := text(t, ctx, "#streams")
	require.Contains(t, streams, "account-"+id)
	require.Contains(t, streams, "account-poison")
	require.NotContains(t, streams, "acct-", "the category filter")
	open(t, ctx, f.srv.URL, "/streams?prefix=acct-", "#streams")
	require.Contains(t, text(t, ctx, "#streams"), hostile)
	noXSS(t, ctx)
	shot(t, ctx, "streams")
	// Its link leads to its page: IDs travel escaped in URLs.
	click(t, ctx, "#streams a")
	poll(t, ctx, fmt.Sprintf(`document.querySelector("h1").textContent === %q`, "Stream "+hostile), 10*time.Second, "the hostile stream's page")
	require.Contains(t, text(t, ctx, "table.records"), "bank.Opened")
	noXSS(t, ctx)

	// A stream's events with their payloads, and the hostile one.
	open(t, ctx, f.srv.URL, "/stream?id="+url.QueryEscape("account-"+id), "table.records")
	events := text(t, ctx, "table.records")
	require.Contains(t, events, "bank.Deposited")
	require.Contains(t, events, `"amount": 300`)
	shot(t, ctx, "stream")
	open(t, ctx, f.srv.URL, "/stream?id="+url.QueryEscape(hostile), "table.records")
	require.Contains(t, text(t, ctx, "h1"), hostile)
	require.Contains(t, text(t, ctx, "table.records"), `<script>window.__xss=1</script>`)
	noXSS(t, ctx)

	// An event by ID, and the feed from its position.
	recs, err := f.store.ReadAll(t.Context(), eventstore.Position{}, 100)
	require.NoError(t, err)
	var hostileRec eventstore.Record
	for _, r := range recs {
		if r.Position == hostileRes.Position {
			hostileRec = r
		}
	}
	open(t, ctx, f.srv.URL, "/event?id="+hostileRec.ID.String(), "#payload")
	require.Contains(t, text(t, ctx, "#payload"), `onerror=\"window.__xss=1\"`)
	noXSS(t, ctx)
	open(t, ctx, f.srv.URL, "/feed?after="+recs[0].Position.String(), "table.records")
	feed := text(t, ctx, "table.records")
	require.NotContains(t, feed, recs[0].Position.String()+"\t", "the feed starts after the position")
	require.Contains(t, feed, recs[1].Position.String())

	// The live feed shows a new event within a second.
	open(t, ctx, f.srv.URL, "/live", "#live")
	poll(t, ctx, `document.getElementById("live-state").textContent === "live"`, 10*time.Second, "the live feed did not connect")
	liveID := "account-live-" + uuid.NewString()
	appended := time.Now()
	f.append(liveID, "bank.Deposited", map[string]any{"amount": 7})
	poll(t, ctx, fmt.Sprintf(`document.querySelector("#live tbody").textContent.includes(%q)`, liveID), time.Second,
		"the live feed did not show the new event within a second")
	t.Logf("the live feed showed the new event %s after its append", time.Since(appended).Round(time.Millisecond))
	// Paused, it holds what comes and shows it on resume.
	click(t, ctx, "#pause")
	heldID := "account-held-" + uuid.NewString()
	f.append(heldID, "bank.Deposited", map[string]any{"amount": 8})
	poll(t, ctx, `document.getElementById("live-state").textContent === "paused (1 new)"`, 5*time.Second, "the paused feed did not hold the event")
	require.NotContains(t, text(t, ctx, "#live tbody"), heldID)
	shot(t, ctx, "live")
	click(t, ctx, "#pause")
	require.Contains(t, text(t, ctx, "#live tbody"), heldID)

	// The projection: its parked records with their errors; skip one,
	// retry the other once it can be applied.
	f.caughtUp()
	open(t, ctx, f.srv.URL, "/projection?name=counts", "#parked")
	parked := text(t, ctx, "#parked")
	require.Contains(t, parked, poison.Streams[0].StreamID)
	require.Contains(t, parked, "<b>poison</b>", "the error, as text")
	shot(t, ctx, "projection")
	poisonRecs, err := eventstore.Collect(f.store.ReadStream(t.Context(), "account-poison", 1))
	require.NoError(t, err)
	skipSel := fmt.Sprintf(`form[action="/projection/skip"]:has(input[value=%q]) button`, poisonRecs[0].ID.String())
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, skipSel)))
	require.NoError(t, err)
	require.Equal(t, 1, n, "the skip button of the first parked record")
	do(t, ctx, chromedp.Click(chromedp.CSS(skipSel)), chromedp.WaitVisible(chromedp.CSS(".message")))
	require.Equal(t, "skipped 1 record(s)", text(t, ctx, ".message"))
	require.NotContains(t, text(t, ctx, "#parked"), poisonRecs[0].ID.String())
	f.failing.Store(false)
	click(t, ctx, "#retry-all")
	poll(t, ctx, `(document.querySelector(".message") || {}).textContent === "retried: 1 applied, 0 still parked"`, 30*time.Second,
		"the retry's answer")
	require.Contains(t, text(t, ctx, "#parked"), "nothing is parked")

	// A rebuild from the UI, with its progress, to the switch.
	click(t, ctx, "#rebuild-button")
	poll(t, ctx, `(document.querySelector(".message") || {}).textContent === "rebuild started"`, 30*time.Second, "the rebuild's start")
	poll(t, ctx, `document.getElementById("build") !== null || document.getElementById("rebuild-result") !== null`, 30*time.Second,
		"the rebuild's progress bar or result")
	shot(t, ctx, "rebuilding")
	poll(t, ctx, `document.getElementById("rebuild-result") !== null`, 60*time.Second, "the rebuild's result (the page reloads when it is over)")
	require.Contains(t, text(t, ctx, "#rebuild-result"), "now serving v2")
	shot(t, ctx, "rebuilt")

	// The other pages render.
	for _, p := range []struct{ path, want string }{
		{"/projections", "counts"}, {"/relays", "no relay of this name has led yet"}, {"/sagas", "no saga has run"}, {"/health", "redis"},
	} {
		open(t, ctx, f.srv.URL, p.path, "main")
		require.Contains(t, text(t, ctx, "main"), p.want, p.path)
	}
}

// Without the token nothing is served; with a session, a POST without
// the CSRF token, or from another origin, is refused; the headers forbid
// inline script and framing.
func TestConsoleIsSafeByDefault(t *testing.T) {
	f := newFixture(t)
	get := func(c *http.Client, path string, header ...string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := c.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		return res
	}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/streams", "/live/events", "/projection?name=counts"} {
		require.Equal(t, http.StatusUnauthorized, get(plain, path).StatusCode, path)
	}
	require.Equal(t, http.StatusUnauthorized, get(plain, "/?token=wrong-token-0123456789").StatusCode)
	require.Equal(t, http.StatusUnauthorized, get(plain, "/", "Authorization", "Bearer nope").StatusCode)
	res := get(plain, "/", "Authorization", "Bearer "+token)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, res.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Contains(t, res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	require.Equal(t, "same-origin", res.Header.Get("Referrer-Policy"))

	// A browser session: the token link sets the cookie and redirects.
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	browser := &http.Client{Jar: jar}
	res = get(browser, "/?token="+token)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "/", res.Request.URL.Path)
	require.Empty(t, res.Request.URL.RawQuery, "the token leaves the URL")
	post := func(form url.Values, header ...string) int {
		req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/projection/rebuild", strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := (&http.Client{Jar: jar, CheckRedirect: plain.CheckRedirect}).Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, http.StatusForbidden, post(url.Values{"name": {"counts"}}), "no CSRF token")
	require.Equal(t, http.StatusForbidden, post(url.Values{"name": {"counts"}, "csrf": {"forged"}}), "a wrong CSRF token")
	// The page's CSRF token, from another origin.
	page := get(browser, "/projection?name=counts")
	require.Equal(t, http.StatusOK, page.StatusCode)
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/projection?name=counts", nil)
	body, err := browser.Do(req)
	require.NoError(t, err)
	html, _ := io.ReadAll(body.Body)
	_ = body.Body.Close()
	i := strings.Index(string(html), `name="csrf" value="`)
	require.Positive(t, i)
	csrf := string(html[i+len(`name="csrf" value="`):])
	csrf = csrf[:strings.IndexByte(csrf, '"')]
	require.Equal(t, http.StatusForbidden, post(url.Values{"name": {"counts"}, "csrf": {csrf}}, "Origin", "http://evil.example"))
	require.Equal(t, http.StatusNotFound, post(url.Values{"name": {"unknown-projection"}, "csrf": {csrf}}, "Origin", f.srv.URL))
	require.Equal(t, http.StatusSeeOther, post(url.Values{"name": {"counts"}, "csrf": {csrf}}, "Origin", f.srv.URL))
}

// fakeSagas holds one parked instance and records the actions asked of
// it.
type fakeSagas struct {
	mu      sync.Mutex
	parked  bool
	actions []string
}

func (f *fakeSagas) instance() saga.Instance {
	in := saga.Instance{Saga: "shop.fulfilment", ID: `order-<i>7</i>`, Status: saga.StatusRunning, Version: 3,
		State: []byte(`{"step":"paid"}`), UpdatedAt: time.Now()}
	if f.parked {
		in.Status = saga.StatusParked
		in.Park = &saga.Park{Kind: saga.ParkCommand, Ref: "c-1", Error: "stock service down", Attempts: 8}
	}
	return in
}

func (f *fakeSagas) Sagas(context.Context) ([]string, error) { return []string{"shop.fulfilment"}, nil }

func (f *fakeSagas) Count(context.Context, string) (map[saga.Status]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[saga.Status]int{f.instance().Status: 1}, nil
}

func (f *fakeSagas) List(_ context.Context, _ string, flt saga.Filter) ([]saga.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.instance()
	if flt.Status != "" && flt.Status != in.Status {
		return nil, nil
	}
	return []saga.Instance{in}, nil
}

func (f *fakeSagas) Get(_ context.Context, _, id string) (saga.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.instance(); id == in.ID {
		return in, nil
	}
	return saga.Instance{}, saga.ErrNotFound
}

func (f *fakeSagas) act(verb, name, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, verb+" "+name+" "+id)
	f.parked = false
	return nil
}

func (f *fakeSagas) Retry(_ context.Context, name, id string) error { return f.act("retry", name, id) }
func (f *fakeSagas) Skip(_ context.Context, name, id string) error  { return f.act("skip", name, id) }

// Process-manager instances by state, one parked instance shown with its
// error, and its retry through the UI.
func TestConsoleSagasInABrowser(t *testing.T) {
	sagas := &fakeSagas{parked: true}
	f := newFixture(t, sagas)
	ctx := browser(t)
	open(t, ctx, f.srv.URL, "/?token="+token, "h1")
	require.Contains(t, text(t, ctx, "main"), "shop.fulfilment")
	open(t, ctx, f.srv.URL, "/saga?name=shop.fulfilment&status=parked", "#instances")
	list := text(t, ctx, "#instances")
	require.Contains(t, list, "order-<i>7</i>")
	require.Contains(t, list, "stock service down")
	noXSS(t, ctx)
	shot(t, ctx, "saga")
	click(t, ctx, "#instances a")
	poll(t, ctx, `document.location.pathname === "/saga/instance"`, 10*time.Second, "the instance's page")
	require.Contains(t, text(t, ctx, "main"), `"step": "paid"`)
	click(t, ctx, `form[action="/saga/retry"] button`)
	poll(t, ctx, `(document.querySelector(".message") || {}).textContent === "retried"`, 10*time.Second, "the retry's answer")
	sagas.mu.Lock()
	defer sagas.mu.Unlock()
	require.Equal(t, []string{"retry shop.fulfilment order-<i>7</i>"}, sagas.actions)
}
