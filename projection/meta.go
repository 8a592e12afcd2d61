package projection

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// storedConfig is what the registry keeps of a projection's configuration,
// so operators' tools know every projection at any time.
type storedConfig struct {
	Partitions int `json:"partitions"`
}

// ConfigError reports a runner whose projection configuration disagrees
// with the one stored with the read model.
type ConfigError struct {
	Projection string
	Stored     int
	Configured int
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("projection %q: its read model has %d partitions, this runner is configured with %d: "+
		"the partition count of a read model cannot change; give the projection a new name to build one with %d",
		e.Projection, e.Stored, e.Configured, e.Configured)
}

// meta is a projection's global state (the {N}:meta hash).
type meta struct {
	partitions int
	// active is the serving namespace version; 0 before the first build
	// completed.
	active int64
	// building is the version a first build writes (0 when none runs);
	// until is the end of its history.
	building int64
	until    eventstore.Position
	// rebuild is the version a blue/green rebuild builds, or 0.
	rebuild int64
	// lost lists the partitions of the active version that lost their
	// data and are being rebuilt in place.
	lost []int
	// exists is false when the hash is missing.
	exists bool
}

// ready reports whether the active namespace may be served.
func (m meta) ready(name string) error {
	switch {
	case !m.exists:
		return &NotReadyError{Projection: name, Reason: "no read model (no runner has built it yet, or its data was lost)"}
	case m.active == 0:
		return &NotReadyError{Projection: name, Reason: "first build running"}
	case len(m.lost) > 0:
		return &NotReadyError{Projection: name, Reason: fmt.Sprintf("partitions %v lost their data and are being rebuilt", m.lost)}
	}
	return nil
}

const lostField = "lost:"

func readMeta(ctx context.Context, rdb redis.Cmdable, k keys) (meta, error) {
	vals, err := rdb.HGetAll(ctx, k.meta()).Result()
	if err != nil {
		return meta{}, fmt.Errorf("projection %q: read meta: %w", k.name, err)
	}
	return parseMeta(k.name, vals)
}

func parseMeta(name string, vals map[string]string) (meta, error) {
	m := meta{exists: len(vals) > 0, partitions: 1}
	num := func(f string) (int64, error) {
		s, ok := vals[f]
		if !ok || s == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("projection %q: meta field %s = %q", name, f, s)
		}
		return n, nil
	}
	var err error
	var p int64
	if p, err = num("partitions"); err != nil {
		return m, err
	}
	if p > 0 {
		m.partitions = int(p)
	}
	if m.active, err = num("active"); err != nil {
		return m, err
	}
	if m.building, err = num("building"); err != nil {
		return m, err
	}
	if m.rebuild, err = num("rebuild"); err != nil {
		return m, err
	}
	if s := vals["until"]; s != "" {
		if m.until, err = eventstore.ParsePosition(s); err != nil {
			return m, fmt.Errorf("projection %q: meta field until: %w", name, err)
		}
	}
	for f := range vals {
		if rest, ok := strings.CutPrefix(f, lostField); ok {
			if n, err := strconv.Atoi(rest); err == nil {
				m.lost = append(m.lost, n)
			}
		}
	}
	return m, nil
}

// switchLua makes version ARGV[1] the active one if the meta field
// ARGV[2] ("building" or "rebuild") still names it.
const switchLua = `
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'active', ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[2])
if ARGV[2] == 'building' then
  redis.call('HDEL', KEYS[1], 'until')
end
return 1`

// readyField is the checkpoint field set once a namespace's partition has
// replayed its history (first build or rebuild): a namespace is switched to
// when every partition has it.
const readyField = "ready"

// trySwitch makes version v active (field "building" or "rebuild" of the
// meta names it) once every partition of v is ready.
func (r *Runner) trySwitch(ctx context.Context, pr *proj, v int64, field string) (bool, error) {
	if ready, err := r.be.versionReady(ctx, pr.name, pr.partitions, v); err != nil || !ready {
		return false, err
	}
	switched, err := r.be.switchTo(ctx, pr.name, v, field)
	if err != nil {
		return false, err
	}
	if switched {
		r.log.Info("projection switched", "projection", pr.name, "version", v, "after", field)
	}
	return switched, nil
}
