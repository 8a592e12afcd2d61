package console

import (
	"context"
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// sample is what the console measured at one moment.
type sample struct {
	at time.Time
	// seq is the feed head's sequence number (-1: unknown).
	seq int64
	// relayLag and projectionLag are lags in events, by name (a missing
	// name: unknown).
	relayLag, projectionLag map[string]int64
	// projectionLagTime is the projections' lag in seconds.
	projectionLagTime map[string]float64
}

// history keeps the last samples, for the charts.
type history struct {
	mu      sync.Mutex
	max     int
	samples []sample
}

func newHistory(n int) *history { return &history{max: max(n, 2)} }

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
	if len(h.samples) > h.max {
		h.samples = slices.Delete(h.samples, 0, len(h.samples)-h.max)
	}
}

func (h *history) snapshot() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.samples)
}

// Run samples the charts' figures every Config.Sample until ctx ends.
func (c *Console) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Sample)
	defer t.Stop()
	for {
		c.sampleOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Console) sampleOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Sample)
	defer cancel()
	s := sample{at: time.Now(), seq: -1, relayLag: map[string]int64{}, projectionLag: map[string]int64{},
		projectionLagTime: map[string]float64{}}
	if head, err := c.cfg.Store.Head(ctx); err == nil {
		s.seq = int64(head.Seq)
	}
	for _, rs := range c.relayStates(ctx) {
		if rs.LagEvents >= 0 {
			s.relayLag[rs.Name] = rs.LagEvents
		}
	}
	if c.cfg.Projections != nil {
		if names, err := c.cfg.Projections.Projections(ctx); err == nil {
			for _, n := range names {
				if st, err := c.cfg.Projections.Status(ctx, n); err == nil && st.LagEvents >= 0 {
					s.projectionLag[n] = st.LagEvents
					s.projectionLagTime[n] = st.Lag.Seconds()
				}
			}
		}
	}
	c.history.add(s)
}

// chart is a small line chart, drawn as inline SVG.
type chart struct {
	Title string
	// Last is the latest value, as shown next to the title.
	Last string
	SVG  template.HTML
}

// point is a value at a time.
type point struct {
	at time.Time
	v  float64
}

// sparkline draws points as an SVG polyline scaled to its maximum. The
// SVG is made of numbers only; the title is escaped by the template.
func sparkline(points []point, window time.Duration) template.HTML {
	const w, h = 300.0, 60.0
	if len(points) == 0 {
		return template.HTML(fmt.Sprintf(`<svg class="chart" viewBox="0 0 %g %g" role="img" aria-label="no data yet"><text x="4" y="34">no data yet</text></svg>`, w, h))
	}
	end := points[len(points)-1].at
	top := 0.0
	for _, p := range points {
		top = max(top, p.v)
	}
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	for i, p := range points {
		x := w - float64(end.Sub(p.at))/float64(window)*w
		y := h - 2 - p.v/top*(h-4)
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", max(x, 0), y)
	}
	return template.HTML(fmt.Sprintf(`<svg class="chart" viewBox="0 0 %g %g" role="img" preserveAspectRatio="none">`+
		`<polyline fill="none" stroke-width="1.5" points="%s"/><text x="2" y="10">max %s</text></svg>`, w, h, b.String(), trim(top)))
}

func trim(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.2f", v)
}

func (h *history) window() time.Duration {
	ss := h.snapshot()
	if len(ss) < 2 {
		return time.Minute
	}
	return max(ss[len(ss)-1].at.Sub(ss[0].at), time.Second)
}

// charts are the overview's: the feed's throughput, the relays' lag and
// the slowest projection's lag.
func (h *history) charts() []chart {
	ss := h.snapshot()
	win := h.window()
	var rate []point
	for i := 1; i < len(ss); i++ {
		a, b := ss[i-1], ss[i]
		if a.seq < 0 || b.seq < 0 || !b.at.After(a.at) {
			continue
		}
		rate = append(rate, point{b.at, max(float64(b.seq-a.seq), 0) / b.at.Sub(a.at).Seconds()})
	}
	out := []chart{{Title: "Appended events/s", SVG: sparkline(rate, win), Last: lastOf(rate, "%.0f")}}
	out = append(out, h.relayChartsOf(ss, win)...)
	var slowest []point
	for _, s := range ss {
		if len(s.projectionLag) == 0 {
			continue
		}
		slowest = append(slowest, point{s.at, float64(slices.Max(slices.Collect(maps.Values(s.projectionLag))))})
	}
	if len(slowest) > 0 {
		out = append(out, chart{Title: "Slowest projection's lag (events)", SVG: sparkline(slowest, win), Last: lastOf(slowest, "%.0f")})
	}
	return out
}

func lastOf(ps []point, format string) string {
	if len(ps) == 0 {
		return "-"
	}
	return fmt.Sprintf(format, ps[len(ps)-1].v)
}

func (h *history) relayCharts() []chart { return h.relayChartsOf(h.snapshot(), h.window()) }

func (h *history) relayChartsOf(ss []sample, win time.Duration) []chart {
	names := map[string]bool{}
	for _, s := range ss {
		for n := range s.relayLag {
			names[n] = true
		}
	}
	var out []chart
	for _, n := range slices.Sorted(maps.Keys(names)) {
		var ps []point
		for _, s := range ss {
			if v, ok := s.relayLag[n]; ok {
				ps = append(ps, point{s.at, float64(v)})
			}
		}
		out = append(out, chart{Title: "Relay " + n + " lag (events)", SVG: sparkline(ps, win), Last: lastOf(ps, "%.0f")})
	}
	return out
}

// projectionCharts are each projection's lag in events and seconds.
func (h *history) projectionCharts() []chart {
	ss := h.snapshot()
	win := h.window()
	names := map[string]bool{}
	for _, s := range ss {
		for n := range s.projectionLag {
			names[n] = true
		}
	}
	var out []chart
	for _, n := range slices.Sorted(maps.Keys(names)) {
		var evs, secs []point
		for _, s := range ss {
			if v, ok := s.projectionLag[n]; ok {
				evs = append(evs, point{s.at, float64(v)})
				secs = append(secs, point{s.at, s.projectionLagTime[n]})
			}
		}
		out = append(out,
			chart{Title: n + " lag (events)", SVG: sparkline(evs, win), Last: lastOf(evs, "%.0f")},
			chart{Title: n + " lag (seconds)", SVG: sparkline(secs, win), Last: lastOf(secs, "%.2f")})
	}
	return out
}
