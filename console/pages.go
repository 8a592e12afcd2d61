package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/saga"
)

// Page sizes.
const (
	streamsPage = 50
	eventsPage  = 50
	sagasPage   = 50
)

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000000Z")
	},
	"dur": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"count": func(n int64) string {
		if n < 0 {
			return "?"
		}
		return strconv.FormatInt(n, 10)
	},
	"payload": func(data []byte, md eventstore.Metadata) string {
		return payloadText(data, md.Get(eventstore.MetaContentType))
	},
	"pct":  percent,
	"frac": func(done, total int64) string { return fmt.Sprintf("%.3f", fraction(done, total)) },
	"add":  func(a, b int64) int64 { return a + b },
}

// fraction is done/total in [0, 1] (1 when total is not positive).
func fraction(done, total int64) float64 {
	if total <= 0 {
		return 1
	}
	return min(max(float64(done)/float64(total), 0), 1)
}

// percent formats done/total as a percentage.
func percent(done, total int64) string { return fmt.Sprintf("%.1f%%", 100*fraction(done, total)) }

// payloadText is a payload as people read it: indented JSON, else the
// text, else its size.
func payloadText(data []byte, contentType string) string {
	if (contentType == "" || contentType == eventstore.JSONContentType) && json.Valid(data) {
		// Decoded and encoded again, so that escapes such as \u003c show
		// as the characters they stand for (the page escapes them).
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) == nil {
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if enc.Encode(v) == nil {
				return strings.TrimSuffix(b.String(), "\n")
			}
		}
	}
	if isText(data) {
		return string(data)
	}
	return fmt.Sprintf("<%d bytes of %s>", len(data), cmpOr(contentType, "binary data"))
}

func isText(b []byte) bool {
	for _, r := range string(b) {
		if r == '\uFFFD' || (r < ' ' && r != '\n' && r != '\t' && r != '\r') {
			return false
		}
	}
	return true
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// timeout bounds what one page asks of the services.
func timeout(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

// overview is the landing page: health, the feed's head and throughput,
// the relays, the projections and the sagas, with charts.
func (c *Console) overview(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	page := map[string]any{"Health": c.runChecks(ctx)}
	if head, err := c.cfg.Store.Head(ctx); err == nil {
		page["Head"] = head
	} else {
		page["HeadError"] = err.Error()
	}
	page["Relays"] = c.relayStates(ctx)
	if c.cfg.Projections != nil {
		sts, err := c.projectionStatuses(ctx)
		page["Projections"], page["ProjectionsError"] = sts, errText(err)
	}
	if c.cfg.Sagas != nil {
		page["Sagas"], page["SagasError"] = c.sagaCounts(ctx)
	}
	page["Charts"] = c.history.charts()
	return c.render(w, r, "overview.html", "Overview", page)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

type checkResult struct {
	Name    string
	OK      bool
	Error   string
	Latency time.Duration
}

func (c *Console) runChecks(ctx context.Context) []checkResult {
	out := make([]checkResult, len(c.cfg.Health))
	done := make(chan struct{}, len(c.cfg.Health))
	for i, ch := range c.cfg.Health {
		go func() {
			defer func() { done <- struct{}{} }()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			start := time.Now()
			err := ch.Check(cctx)
			out[i] = checkResult{Name: ch.Name, OK: err == nil, Error: errText(err), Latency: time.Since(start)}
		}()
	}
	for range c.cfg.Health {
		<-done
	}
	return out
}

func (c *Console) health(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	return c.render(w, r, "health.html", "Health", map[string]any{"Health": c.runChecks(ctx)})
}

// streams lists streams by ID prefix or category ("<category>-" prefix).
func (c *Console) streams(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	q := r.URL.Query()
	prefix, category, after := q.Get("prefix"), q.Get("category"), q.Get("after")
	search := prefix
	if category != "" {
		search = category + "-" + prefix
	}
	list, err := c.cfg.Store.ListStreams(ctx, search, after, streamsPage+1)
	if err != nil {
		return err
	}
	next := ""
	if len(list) > streamsPage {
		list = list[:streamsPage]
		next = list[len(list)-1].StreamID
	}
	return c.render(w, r, "streams.html", "Streams", map[string]any{"Streams": list, "Prefix": prefix,
		"Category": category, "After": after, "Next": next})
}

// stream pages through a stream's events from a version.
func (c *Console) stream(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	q := r.URL.Query()
	id := q.Get("id")
	if id == "" {
		return badf("which stream? (?id=)")
	}
	from := int64(1)
	if s := q.Get("from"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 1 {
			return badf("from=%q is not a version (1 or more)", s)
		}
		from = v
	}
	var recs []eventstore.Record
	for rec, err := range c.cfg.Store.ReadStream(ctx, id, from) {
		if err != nil {
			if errors.Is(err, eventstore.ErrStreamNotFound) {
				break
			}
			return err
		}
		recs = append(recs, rec)
		if len(recs) > eventsPage {
			break
		}
	}
	next := int64(0)
	if len(recs) > eventsPage {
		recs = recs[:eventsPage]
		next = recs[len(recs)-1].Version + 1
	}
	prev := max(from-eventsPage, 0)
	if from == 1 {
		prev = 0
	}
	return c.render(w, r, "stream.html", "Stream "+id, map[string]any{"ID": id, "Records": recs, "From": from,
		"Next": next, "Prev": prev})
}

// event shows one event by ID.
func (c *Console) event(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	s := strings.TrimSpace(r.URL.Query().Get("id"))
	id, err := uuid.Parse(s)
	if err != nil {
		return badf("%q is not an event ID (a UUID)", s)
	}
	rec, err := c.cfg.Store.ReadEvent(ctx, id)
	if err != nil {
		return err
	}
	return c.render(w, r, "event.html", "Event "+id.String(), map[string]any{"R": rec})
}

// feed pages through the global feed after a position.
func (c *Console) feed(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	var after eventstore.Position
	if s := strings.TrimSpace(r.URL.Query().Get("after")); s != "" {
		p, err := eventstore.ParsePosition(s)
		if err != nil {
			return badf("%q is not a position (tx-seq, as 12345-678)", s)
		}
		after = p
	}
	recs, err := c.cfg.Store.ReadAll(ctx, after, eventsPage)
	if err != nil {
		return err
	}
	next := ""
	if len(recs) == eventsPage {
		next = recs[len(recs)-1].Position.String()
	}
	return c.render(w, r, "feed.html", "Feed", map[string]any{"Records": recs, "After": after, "Next": next})
}

// live is the live feed's page; its script follows /live/events.
func (c *Console) live(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	head, err := c.cfg.Store.Head(ctx)
	if err != nil {
		return err
	}
	return c.render(w, r, "live.html", "Live feed", map[string]any{"Head": head})
}

// liveEvent is a record as the live feed's script gets it.
type liveEvent struct {
	ID         string `json:"id"`
	Stream     string `json:"stream"`
	Version    int64  `json:"version"`
	Type       string `json:"type"`
	Position   string `json:"position"`
	RecordedAt string `json:"recorded_at"`
	Data       string `json:"data"`
}

// liveEvents streams the feed after ?after= as server-sent events, one
// per record, as the store's subscription delivers them (woken by each
// commit, in this process or, through the store's notifications, in
// others). A reconnecting browser resumes after the last event it got
// (Last-Event-ID); an idle stream gets a comment every 15 s, so that
// proxies keep it open.
func (c *Console) liveEvents(w http.ResponseWriter, r *http.Request) error {
	fl, ok := w.(http.Flusher)
	if !ok {
		return errors.New("console: streaming is not supported by this connection")
	}
	s := r.Header.Get("Last-Event-ID")
	if s == "" {
		s = r.URL.Query().Get("after")
	}
	var after eventstore.Position
	if s != "" {
		p, err := eventstore.ParsePosition(s)
		if err != nil {
			return badf("%q is not a position", s)
		}
		after = p
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	type item struct {
		rec eventstore.Record
		err error
	}
	items := make(chan item, 64)
	go func() {
		defer close(items)
		for rec, err := range c.cfg.Store.Subscribe(ctx, after) {
			select {
			case items <- item{rec, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": eskit live feed\n\n")
	fl.Flush()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-keepAlive.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case it, ok := <-items:
			if !ok {
				return nil
			}
			if it.err != nil {
				if ctx.Err() == nil {
					// The browser reconnects, after the last event it got.
					fmt.Fprintf(w, "event: failure\ndata: %s\n\n", jsonString(it.err.Error()))
					fl.Flush()
				}
				return nil
			}
			rec := it.rec
			b, _ := json.Marshal(liveEvent{ID: rec.ID.String(), Stream: rec.StreamID, Version: rec.Version, Type: rec.Type,
				Position: rec.Position.String(), RecordedAt: rec.RecordedAt.UTC().Format(time.RFC3339Nano),
				Data: payloadText(rec.Data, rec.Metadata.Get(eventstore.MetaContentType))})
			fmt.Fprintf(w, "id: %s\nevent: record\ndata: %s\n\n", rec.Position, b)
			// Flush once what is ready has been written.
			if len(items) == 0 {
				fl.Flush()
			}
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// projectionRow is a projection's status with its build progress.
type projectionRow struct {
	projection.Status
	Progress    projection.BuildProgress
	Building    bool
	ProgressPct string
}

func row(st projection.Status) projectionRow {
	p, ok := st.BuildProgress()
	r := projectionRow{Status: st, Progress: p, Building: ok}
	if ok && p.Total >= 0 {
		r.ProgressPct = percent(p.Done, p.Total)
	}
	return r
}

func (c *Console) projectionStatuses(ctx context.Context) ([]projectionRow, error) {
	names, err := c.cfg.Projections.Projections(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]projectionRow, 0, len(names))
	for _, n := range names {
		st, err := c.cfg.Projections.Status(ctx, n)
		if err != nil {
			return out, err
		}
		out = append(out, row(st))
	}
	return out, nil
}

func (c *Console) projections(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	sts, err := c.projectionStatuses(ctx)
	if err != nil {
		return err
	}
	return c.render(w, r, "projections.html", "Projections", map[string]any{"Projections": sts,
		"Charts": c.history.projectionCharts()})
}

// knownProjection checks that name is registered.
func (c *Console) knownProjection(ctx context.Context, name string) error {
	names, err := c.cfg.Projections.Projections(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(names, name) {
		return fmt.Errorf("%w: %q", projection.ErrUnknownProjection, name)
	}
	return nil
}

// namedStatus is the status of the projection ?name= names.
func (c *Console) namedStatus(ctx context.Context, r *http.Request) (string, projection.Status, error) {
	name := r.URL.Query().Get("name")
	if err := c.knownProjection(ctx, name); err != nil {
		return name, projection.Status{}, err
	}
	st, err := c.cfg.Projections.Status(ctx, name)
	return name, st, err
}

func (c *Console) projection(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	name, st, err := c.namedStatus(ctx, r)
	if err != nil {
		return err
	}
	parked, err := c.cfg.Projections.Parked(ctx, name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	var run *rebuildRun
	if rr := c.rebuilds[name]; rr != nil {
		cp := *rr
		run = &cp
	}
	c.mu.Unlock()
	return c.render(w, r, "projection.html", "Projection "+name, map[string]any{"P": row(st), "Parked": parked,
		"Rebuild": run, "Message": r.URL.Query().Get("msg")})
}

// projectionProgress answers a projection's build progress as JSON, for
// the progress bar's script.
func (c *Console) projectionProgress(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	name, st, err := c.namedStatus(ctx, r)
	if err != nil {
		return err
	}
	p, building := st.BuildProgress()
	c.mu.Lock()
	rr := c.rebuilds[name]
	out := map[string]any{"name": name, "version": st.Version, "building": building, "done": p.Done, "total": p.Total,
		"position": p.Position.String(), "ready": st.Ready}
	if rr != nil {
		out["running"] = rr.Finished.IsZero()
		out["error"] = rr.Err
		out["rebuilt_version"] = rr.Version
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// back redirects to a page with a message.
func back(w http.ResponseWriter, r *http.Request, path string, q url.Values, msg string) error {
	q.Set("msg", msg)
	http.Redirect(w, r, path+"?"+q.Encode(), http.StatusSeeOther)
	return nil
}

func (c *Console) projectionRetry(w http.ResponseWriter, r *http.Request) error {
	name := r.PostFormValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := c.knownProjection(ctx, name); err != nil {
		return err
	}
	req := projection.ControlRequest{Op: projection.OpRetry}
	if s := r.PostFormValue("stream"); s != "" {
		req.Streams = []string{s}
	}
	reply, err := c.cfg.Projections.Request(ctx, name, req)
	if err != nil {
		return back(w, r, "/projection", url.Values{"name": {name}}, "retry failed: "+err.Error())
	}
	c.log.Info("console: parked records retried", "projection", name, "stream", r.PostFormValue("stream"),
		"applied", reply.Applied, "remaining", reply.Remaining)
	return back(w, r, "/projection", url.Values{"name": {name}},
		fmt.Sprintf("retried: %d applied, %d still parked", reply.Applied, reply.Remaining))
}

func (c *Console) projectionSkip(w http.ResponseWriter, r *http.Request) error {
	name := r.PostFormValue("name")
	id, err := uuid.Parse(r.PostFormValue("id"))
	if err != nil {
		return badf("%q is not an event ID", r.PostFormValue("id"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := c.knownProjection(ctx, name); err != nil {
		return err
	}
	reply, err := c.cfg.Projections.Request(ctx, name, projection.ControlRequest{Op: projection.OpSkip, EventIDs: []uuid.UUID{id}})
	if err != nil {
		return back(w, r, "/projection", url.Values{"name": {name}}, "skip failed: "+err.Error())
	}
	c.log.Info("console: parked record skipped", "projection", name, "event", id, "skipped", reply.Skipped)
	return back(w, r, "/projection", url.Values{"name": {name}}, fmt.Sprintf("skipped %d record(s)", reply.Skipped))
}

// projectionRebuild starts a blue/green rebuild in the background; the
// projection's page shows its progress.
func (c *Console) projectionRebuild(w http.ResponseWriter, r *http.Request) error {
	name := r.PostFormValue("name")
	ctx, cancel := timeout(r)
	defer cancel()
	if err := c.knownProjection(ctx, name); err != nil {
		return err
	}
	c.mu.Lock()
	if rr := c.rebuilds[name]; rr != nil && rr.Finished.IsZero() {
		c.mu.Unlock()
		return back(w, r, "/projection", url.Values{"name": {name}}, "a rebuild started here is still running")
	}
	run := &rebuildRun{Started: time.Now()}
	c.rebuilds[name] = run
	c.mu.Unlock()
	c.log.Info("console: rebuild requested", "projection", name)
	c.wg.Go(func() {
		rctx, cancel := context.WithTimeout(c.bg, c.cfg.RebuildTimeout)
		defer cancel()
		v, err := c.cfg.Projections.Rebuild(rctx, name)
		c.mu.Lock()
		defer c.mu.Unlock()
		run.Finished, run.Version = time.Now(), v
		if err != nil {
			run.Err = err.Error()
			c.log.Warn("console: rebuild failed", "projection", name, "err", err)
		}
	})
	return back(w, r, "/projection", url.Values{"name": {name}}, "rebuild started")
}

// relayState is a relay's status with the lag behind the head.
type relayState struct {
	Name      string
	Leader    bool
	Holder    string
	Token     uint64
	Expires   time.Time
	Published eventstore.Position
	At        time.Time
	Head      eventstore.Position
	LagEvents int64
	Error     string
}

func (c *Console) relayStates(ctx context.Context) []relayState {
	if c.cfg.RelayStatus == nil {
		return nil
	}
	head, herr := c.cfg.Store.Head(ctx)
	out := make([]relayState, 0, len(c.cfg.Relays))
	for _, name := range c.cfg.Relays {
		st, err := c.cfg.RelayStatus(ctx, name)
		rs := relayState{Name: name, Head: head, LagEvents: -1}
		switch {
		case err != nil:
			rs.Error = err.Error()
		case !st.HasCheckpoint && !st.Leader:
			rs.Error = "no relay of this name has led yet"
		default:
			rs.Leader, rs.Published, rs.At = st.Leader, st.Checkpoint, st.CheckpointAt
			if st.Leader {
				rs.Holder, rs.Token, rs.Expires = st.Lease.Holder, st.Lease.Token, st.Lease.Expires
			}
			if herr == nil {
				rs.LagEvents = eventstore.EventsBetween(st.Checkpoint, head)
			}
		}
		out = append(out, rs)
	}
	return out
}

func (c *Console) relays(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	return c.render(w, r, "relays.html", "Relays", map[string]any{"Relays": c.relayStates(ctx),
		"Charts": c.history.relayCharts()})
}

// sagaCount is a saga's instances by status.
type sagaCount struct {
	Name   string
	Counts map[string]int
	Total  int
}

// byStatus is a saga's counts keyed by the statuses' names, every status
// present (for the templates).
func byStatus(counts map[saga.Status]int) map[string]int {
	out := make(map[string]int, len(statuses))
	for _, st := range statuses {
		out[string(st)] = counts[st]
	}
	return out
}

// statuses are the instance statuses, in the order shown.
var statuses = []saga.Status{saga.StatusRunning, saga.StatusWaiting, saga.StatusParked, saga.StatusDone}

func (c *Console) sagaCounts(ctx context.Context) ([]sagaCount, string) {
	names, err := c.cfg.Sagas.Sagas(ctx)
	if err != nil {
		return nil, err.Error()
	}
	out := make([]sagaCount, 0, len(names))
	for _, n := range names {
		counts, err := c.cfg.Sagas.Count(ctx, n)
		if err != nil {
			return out, err.Error()
		}
		sc := sagaCount{Name: n, Counts: byStatus(counts)}
		for _, k := range counts {
			sc.Total += k
		}
		out = append(out, sc)
	}
	return out, ""
}

func (c *Console) sagas(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	counts, errMsg := c.sagaCounts(ctx)
	return c.render(w, r, "sagas.html", "Sagas", map[string]any{"Sagas": counts, "Error": errMsg, "Statuses": statuses})
}

func (c *Console) sagaPage(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	q := r.URL.Query()
	name, status, after := q.Get("name"), saga.Status(q.Get("status")), q.Get("after")
	if err := saga.ValidateName(name); err != nil {
		return badf("%v", err)
	}
	if status != "" && !slices.Contains(statuses, status) {
		return badf("status %q: want running, waiting, parked or done", status)
	}
	list, err := c.cfg.Sagas.List(ctx, name, saga.Filter{Status: status, After: after, Limit: sagasPage + 1})
	if err != nil {
		return err
	}
	next := ""
	if len(list) > sagasPage {
		list = list[:sagasPage]
		next = list[len(list)-1].ID
	}
	counts, err := c.cfg.Sagas.Count(ctx, name)
	if err != nil {
		return err
	}
	return c.render(w, r, "saga.html", "Saga "+name, map[string]any{"Name": name, "Status": string(status),
		"Instances": list, "Next": next, "Counts": byStatus(counts), "Statuses": statuses, "Message": q.Get("msg")})
}

func (c *Console) sagaInstance(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := timeout(r)
	defer cancel()
	q := r.URL.Query()
	name, id := q.Get("name"), q.Get("id")
	if err := saga.ValidateName(name); err != nil {
		return badf("%v", err)
	}
	in, err := c.cfg.Sagas.Get(ctx, name, id)
	if err != nil {
		return err
	}
	return c.render(w, r, "instance.html", "Instance "+id, map[string]any{"Name": name, "I": in,
		"State": payloadText(in.State, ""), "Message": q.Get("msg")})
}

func (c *Console) sagaAct(w http.ResponseWriter, r *http.Request, skip bool) error {
	name, id := r.PostFormValue("name"), r.PostFormValue("id")
	if err := saga.ValidateName(name); err != nil {
		return badf("%v", err)
	}
	ctx, cancel := timeout(r)
	defer cancel()
	verb, act := "retried", c.cfg.Sagas.Retry
	if skip {
		verb, act = "skipped", c.cfg.Sagas.Skip
	}
	msg := verb
	if err := act(ctx, name, id); err != nil {
		msg = "failed: " + err.Error()
	} else {
		c.log.Info("console: saga instance "+verb, "saga", name, "id", id)
	}
	return back(w, r, "/saga/instance", url.Values{"name": {name}, "id": {id}}, msg)
}

func (c *Console) sagaRetry(w http.ResponseWriter, r *http.Request) error {
	return c.sagaAct(w, r, false)
}
func (c *Console) sagaSkip(w http.ResponseWriter, r *http.Request) error {
	return c.sagaAct(w, r, true)
}
