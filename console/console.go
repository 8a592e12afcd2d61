// Package console is eskit's operator web console (eskit console): the
// event store's streams and events, the live feed, the projections with
// their partitions, lag and parked records (retry, skip, rebuild), the
// relays, the process managers' instances and the services' health, as
// server-rendered HTML with a little JavaScript, on the CLI's connection
// settings.
//
// It is safe by default: every request needs the access token (a bearer
// header, or a session cookie set by signing in with it), actions are
// POSTs carrying a CSRF token and asking for confirmation, every value
// from the store is escaped by html/template (and inserted as text by the
// live feed's script), and the Content-Security-Policy allows no inline
// script.
package console

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/saga"
)

// Store is what the console reads of the event store.
type Store interface {
	ListStreams(ctx context.Context, prefix, after string, limit int) ([]pgstore.StreamInfo, error)
	ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error]
	ReadEvent(ctx context.Context, id uuid.UUID) (eventstore.Record, error)
	ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error)
	Head(ctx context.Context) (eventstore.Position, error)
	// Subscribe follows the feed after a position (the live page).
	Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error]
}

// Projections is what the console reads of the projections and asks of
// their runners (a *projection.Reader).
type Projections interface {
	Projections(ctx context.Context) ([]string, error)
	Status(ctx context.Context, name string) (projection.Status, error)
	Parked(ctx context.Context, name string) ([]projection.ParkedRecord, error)
	Request(ctx context.Context, name string, req projection.ControlRequest) (projection.ControlReply, error)
	Rebuild(ctx context.Context, name string) (int64, error)
}

// Sagas is what the console reads of the process managers' store (a
// *pgstore.SagaStore).
type Sagas interface {
	Sagas(ctx context.Context) ([]string, error)
	Count(ctx context.Context, saga string) (map[saga.Status]int, error)
	List(ctx context.Context, saga string, f saga.Filter) ([]saga.Instance, error)
	Get(ctx context.Context, saga, id string) (saga.Instance, error)
	Retry(ctx context.Context, saga, id string) error
	Skip(ctx context.Context, saga, id string) error
}

// RelayStatus reads a relay's status (outbox.ReadStatus on the store's
// database and schema).
type RelayStatus func(ctx context.Context, name string) (outbox.RelayStatus, error)

// Check is a health check of a service the console depends on.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config is what a console shows and how it is protected.
type Config struct {
	// Store is the event store (required).
	Store Store
	// Projections, Sagas and Relays are shown when set.
	Projections Projections
	Sagas       Sagas
	RelayStatus RelayStatus
	// Relays names the relays to show (their -name).
	Relays []string
	// Health checks the services.
	Health []Check
	// Token is the access token (at least 16 characters).
	Token string
	// Sample is how often the charts' figures are sampled (2 s when 0);
	// History how much of them is kept (10 minutes when 0).
	Sample, History time.Duration
	// RebuildTimeout bounds a rebuild started from the console (30
	// minutes when 0).
	RebuildTimeout time.Duration
	Logger         *slog.Logger
}

// MinTokenLength is the shortest access token a console accepts.
const MinTokenLength = 16

// Console serves the operator console.
type Console struct {
	cfg     Config
	log     *slog.Logger
	tmpl    *template.Template
	static  http.Handler
	key     []byte // signs the session cookie and the CSRF token
	session string
	csrf    string
	history *history

	mu       sync.Mutex
	rebuilds map[string]*rebuildRun
	// bg ends the work started from requests (rebuilds) when the console
	// is closed.
	bg     context.Context
	stopBg context.CancelFunc
	wg     sync.WaitGroup
}

// rebuildRun is a rebuild started from the console.
type rebuildRun struct {
	Started  time.Time
	Finished time.Time
	Version  int64
	Err      string
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// sessionCookie holds the signed session of a signed-in browser.
const sessionCookie = "eskit_console"

// New returns a console; Run samples the charts' figures, Close stops
// what it started.
func New(cfg Config) (*Console, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("console: a store is required")
	case len(cfg.Token) < MinTokenLength:
		return nil, fmt.Errorf("console: the access token must have at least %d characters", MinTokenLength)
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 2 * time.Second
	}
	if cfg.History <= 0 {
		cfg.History = 10 * time.Minute
	}
	if cfg.RebuildTimeout <= 0 {
		cfg.RebuildTimeout = 30 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	c := &Console{cfg: cfg, log: cfg.Logger.With("component", "console"), tmpl: tmpl,
		static: http.StripPrefix("/static/", http.FileServerFS(static)), key: key,
		history: newHistory(int(cfg.History / cfg.Sample)), rebuilds: map[string]*rebuildRun{}, bg: bg, stopBg: stop}
	c.session = c.sign("session")
	c.csrf = c.sign("csrf")
	return c, nil
}

// Close stops the rebuilds started from the console and waits for them.
func (c *Console) Close() {
	c.stopBg()
	c.wg.Wait()
}

func (c *Console) sign(what string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(what))
	return hex.EncodeToString(m.Sum(nil))
}

// GenerateToken returns a random access token.
func GenerateToken() (string, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Handler returns the console's HTTP handler.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", c.static)
	mux.HandleFunc("POST /login", c.login)
	page := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, c.authed(func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				c.fail(w, r, err)
			}
		}))
	}
	// Pages that need what the console may lack.
	type handler = func(w http.ResponseWriter, r *http.Request) error
	needs := func(ok bool, what string, h handler) handler {
		return func(w http.ResponseWriter, r *http.Request) error {
			if !ok {
				return badf("this console shows no %s", what)
			}
			return h(w, r)
		}
	}
	proj := func(h handler) handler {
		return needs(c.cfg.Projections != nil, "projections (give it the read models: -redis-url, or -readmodels postgres)", h)
	}
	sagas := func(h handler) handler { return needs(c.cfg.Sagas != nil, "sagas", h) }
	page("GET /{$}", c.overview)
	page("GET /streams", c.streams)
	page("GET /stream", c.stream)
	page("GET /event", c.event)
	page("GET /feed", c.feed)
	page("GET /live", c.live)
	page("GET /live/events", c.liveEvents)
	page("GET /projections", proj(c.projections))
	page("GET /projection", proj(c.projection))
	page("GET /projection/progress", proj(c.projectionProgress))
	page("POST /projection/retry", proj(c.projectionRetry))
	page("POST /projection/skip", proj(c.projectionSkip))
	page("POST /projection/rebuild", proj(c.projectionRebuild))
	page("GET /relays", c.relays)
	page("GET /sagas", sagas(c.sagas))
	page("GET /saga", sagas(c.sagaPage))
	page("GET /saga/instance", sagas(c.sagaInstance))
	page("POST /saga/retry", sagas(c.sagaRetry))
	page("POST /saga/skip", sagas(c.sagaSkip))
	page("GET /health", c.health)
	return securityHeaders(mux)
}

// securityHeaders sets the headers of every answer: no inline script, no
// framing, no referrer to other sites, no sniffing.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// authed lets a request in with the token (Authorization: Bearer, or a
// ?token= link that signs the browser in and is then redirected without
// it) or the session cookie; POSTs from a browser session also need the
// CSRF token and, when the browser sends one, an Origin of this host.
func (c *Console) authed(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := bearer(r); ok {
			if !c.validToken(tok) {
				c.unauthorized(w, r)
				return
			}
			next(w, r)
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" && r.Method == http.MethodGet {
			if !c.validToken(tok) {
				c.unauthorized(w, r)
				return
			}
			c.setSession(w)
			u := *r.URL
			q := u.Query()
			q.Del("token")
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		ck, err := r.Cookie(sessionCookie)
		if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.session)) != 1 {
			c.unauthorized(w, r)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !sameOrigin(r) {
				http.Error(w, "console: cross-origin request refused", http.StatusForbidden)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(c.csrf)) != 1 {
				http.Error(w, "console: missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		next(w, r)
	})
}

// sameOrigin reports whether a browser's POST comes from the console's
// own pages, by the Sec-Fetch-Site and Origin headers browsers send
// (absent ones are not held against it: the CSRF token decides).
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) > len(p) && h[:len(p)] == p {
		return h[len(p):], true
	}
	return "", false
}

func (c *Console) validToken(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.Token)) == 1
}

func (c *Console) setSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: c.session, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
}

// login signs a browser in with the token of the sign-in form.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !c.validToken(r.PostFormValue("token")) {
		c.unauthorized(w, r)
		return
	}
	c.setSession(w)
	next := r.PostFormValue("next")
	if u, err := url.Parse(next); err != nil || next == "" || u.IsAbs() || u.Host != "" || len(next) < 1 || next[0] != '/' || (len(next) > 1 && next[1] == '/') {
		next = "/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) unauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	next := "/"
	if r.Method == http.MethodGet {
		next = r.URL.RequestURI()
	}
	_ = c.tmpl.ExecuteTemplate(w, "login.html", map[string]any{"Next": next})
}

// fail answers an error page: a bad request's message, or the failure.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	var be *badRequest
	switch {
	case errors.As(err, &be):
		status = http.StatusBadRequest
	case errors.Is(err, eventstore.ErrEventNotFound), errors.Is(err, eventstore.ErrStreamNotFound),
		errors.Is(err, saga.ErrNotFound), errors.Is(err, projection.ErrUnknownProjection):
		status = http.StatusNotFound
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, eventstore.ErrTransient):
		status = http.StatusServiceUnavailable
	}
	if status >= 500 {
		c.log.Warn("console: request failed", "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = c.tmpl.ExecuteTemplate(w, "error.html", c.data(r, "Error", map[string]any{"Status": status, "Error": err.Error()}))
}

// badRequest is an error in what the operator asked for.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return &badRequest{msg: fmt.Sprintf(format, args...)} }

// data is what every page's layout gets, with the page's own.
func (c *Console) data(r *http.Request, title string, page map[string]any) map[string]any {
	if page == nil {
		page = map[string]any{}
	}
	page["Title"] = title
	page["CSRF"] = c.csrf
	page["Path"] = r.URL.Path
	page["HasProjections"] = c.cfg.Projections != nil
	page["HasSagas"] = c.cfg.Sagas != nil
	page["HasRelays"] = c.cfg.RelayStatus != nil && len(c.cfg.Relays) > 0
	return page
}

// render writes a page, once it is complete (a template that fails
// leaves no half page behind).
func (c *Console) render(w http.ResponseWriter, r *http.Request, name, title string, page map[string]any) error {
	var b bytes.Buffer
	if err := c.tmpl.ExecuteTemplate(&b, name, c.data(r, title, page)); err != nil {
		return fmt.Errorf("console: render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := w.Write(b.Bytes())
	return err
}
