package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// Operations that can be asked of a projection's runners from any process
// (the operator CLI uses them). OpRetry and OpSkip run on the runners that
// hold the partitions concerned; OpRebuild is Reader.Rebuild.
const (
	OpRebuild = "rebuild"
	OpRetry   = "retry"
	OpSkip    = "skip"
)

// ControlRequest asks the runners of a projection to do something.
type ControlRequest struct {
	ID string `json:"id"`
	Op string `json:"op"`
	// Streams limits OpRetry to these streams (all when empty).
	Streams []string `json:"streams,omitempty"`
	// EventIDs limits OpSkip to these records (all when empty).
	EventIDs []uuid.UUID `json:"event_ids,omitempty"`
}

// ControlReply is the runners' answer (summed over partitions).
type ControlReply struct {
	ID    string `json:"id"`
	Error string `json:"error,omitempty"`
	// Applied and Remaining report OpRetry; Skipped reports OpSkip.
	Applied   int `json:"applied,omitempty"`
	Remaining int `json:"remaining,omitempty"`
	Skipped   int `json:"skipped,omitempty"`
	// Version is the active namespace version after the operation.
	Version int64 `json:"version,omitempty"`
}

// ErrNoActiveRunner: no runner holds the partition (or partitions) a
// request needs, or none answered before the context ended.
var ErrNoActiveRunner = errors.New("projection: no active runner")

const (
	// controlPoll is how often a partition's runner looks for requests.
	controlPoll = 200 * time.Millisecond
	// controlTTL bounds how long requests and replies stay in Redis.
	controlTTL = 10 * time.Minute
)

// controlLoop serves the partition's control requests while the runner
// holds its lease.
func (r *Runner) controlLoop(ctx context.Context, pt *part) {
	t := time.NewTicker(controlPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			raw, ok, err := r.be.takeControl(ctx, pt.pr.name, pt.idx)
			if err != nil {
				if ctx.Err() == nil {
					pt.log.Warn("projection: read control requests", "err", err)
				}
				break
			}
			if !ok {
				break
			}
			r.serveControl(ctx, pt, raw)
		}
	}
}

func (r *Runner) serveControl(ctx context.Context, pt *part, raw []byte) {
	var req ControlRequest
	if err := json.Unmarshal(raw, &req); err != nil || req.ID == "" {
		pt.log.Warn("projection: malformed control request dropped", "request", string(raw))
		return
	}
	reply := ControlReply{ID: req.ID}
	var err error
	switch req.Op {
	case OpRetry:
		var res RetryResult
		res, err = r.retryPartition(ctx, pt, req.Streams)
		reply.Applied, reply.Remaining = res.Applied, res.Remaining
	case OpSkip:
		reply.Skipped, err = r.skipPartition(ctx, pt, req.EventIDs)
	default:
		err = fmt.Errorf("unknown operation %q", req.Op)
	}
	if err != nil {
		reply.Error = err.Error()
	}
	pt.vmu.Lock()
	reply.Version = pt.version
	pt.vmu.Unlock()
	b, _ := json.Marshal(reply)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.be.answerControl(wctx, pt.pr.name, pt.idx, req.ID, b); err != nil {
		pt.log.Warn("projection: answer control request", "op", req.Op, "err", err)
	}
}

// Request asks the runners of the named projection to perform req and
// waits for their replies until ctx ends. OpRebuild is Reader.Rebuild.
// OpRetry and OpSkip go to every partition concerned (a retry of given
// streams to their partitions only); a partition no runner holds fails the
// request at once with ErrNoActiveRunner. A request no runner picks up
// before ctx ends is withdrawn when possible; an operation that failed on a
// runner is returned as an error, with the reply.
func (rd *Reader) Request(ctx context.Context, name string, req ControlRequest) (ControlReply, error) {
	switch req.Op {
	case OpRebuild:
		v, err := rd.Rebuild(ctx, name)
		return ControlReply{ID: req.ID, Version: v}, err
	case OpRetry, OpSkip:
	default:
		return ControlReply{}, fmt.Errorf("projection: unknown operation %q", req.Op)
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	k := rd.keys(name)
	m, err := rd.be.readMeta(ctx, name)
	if err != nil {
		return ControlReply{}, err
	}
	if !m.exists {
		return ControlReply{}, fmt.Errorf("%w: %q", ErrUnknownProjection, name)
	}
	var parts []int
	for p := range m.partitions {
		if req.Op == OpRetry && len(req.Streams) > 0 && !slices.ContainsFunc(req.Streams, func(s string) bool {
			return eventstore.StreamPartition(s, m.partitions) == p
		}) {
			continue
		}
		parts = append(parts, p)
	}
	owners, err := rd.be.currentLeases(ctx, name, parts)
	if err != nil {
		return ControlReply{}, err
	}
	for i, p := range parts {
		if !owners[i].ok {
			return ControlReply{}, fmt.Errorf("projection %q: %w for partition %d", name, ErrNoActiveRunner, p)
		}
	}
	b, err := json.Marshal(req)
	if err != nil {
		return ControlReply{}, err
	}
	total := ControlReply{ID: req.ID, Version: m.active}
	var errs []error
	for _, p := range parts {
		reply, err := rd.requestPartition(ctx, k, p, req.Op, b, req.ID)
		total.Applied += reply.Applied
		total.Remaining += reply.Remaining
		total.Skipped += reply.Skipped
		if reply.Version != 0 {
			total.Version = reply.Version
		}
		if err != nil {
			errs = append(errs, err)
			if total.Error == "" {
				total.Error = err.Error()
			}
		}
	}
	return total, errors.Join(errs...)
}

func (rd *Reader) requestPartition(ctx context.Context, k keys, p int, op string, b []byte, id string) (ControlReply, error) {
	name := k.name
	if err := rd.be.sendControl(ctx, name, p, b); err != nil {
		return ControlReply{}, fmt.Errorf("projection %q: send %s request: %w", name, op, err)
	}
	for {
		wait := time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, max(time.Until(dl), time.Millisecond))
		}
		raw, ok, err := rd.be.awaitReply(ctx, name, p, id, wait)
		switch {
		case err == nil && ok:
			var reply ControlReply
			if err := json.Unmarshal(raw, &reply); err != nil {
				return ControlReply{}, fmt.Errorf("projection %q: malformed reply: %w", name, err)
			}
			if reply.Error != "" {
				return reply, fmt.Errorf("projection %q partition %d: %s: %s", name, p, op, reply.Error)
			}
			return reply, nil
		case err == nil && ctx.Err() == nil:
			continue
		}
		if ctx.Err() != nil {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			withdrawn, _ := rd.be.withdrawControl(wctx, name, p, b)
			cancel()
			if withdrawn {
				return ControlReply{}, fmt.Errorf("projection %q partition %d: %w answered (request withdrawn): %w", name, p, ErrNoActiveRunner, ctx.Err())
			}
			return ControlReply{}, fmt.Errorf("projection %q partition %d: %w answered (the runner took the request and may still carry it out): %w", name, p, ErrNoActiveRunner, ctx.Err())
		}
		return ControlReply{}, fmt.Errorf("projection %q: wait for reply: %w", name, err)
	}
}

// Projections lists the names of the projections registered under this
// prefix (by every runner that ever ran one), sorted.
func (rd *Reader) Projections(ctx context.Context) ([]string, error) {
	return rd.be.projections(ctx)
}

// Prefixes lists the key prefixes under which projections are registered
// in this Redis (on every master of a cluster): what an operator can pass
// as a prefix.
func Prefixes(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	suffix := registryKey("")
	var out []string
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			ks, next, err := c.Scan(ctx, cursor, "*"+globEscape(suffix), 1000).Result()
			if err != nil {
				return err
			}
			for _, k := range ks {
				out = append(out, k[:len(k)-len(suffix)])
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu = make(chan struct{}, 1)
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			mu <- struct{}{}
			defer func() { <-mu }()
			return scan(ctx, node)
		})
	} else {
		err = scan(ctx, rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("projection: list prefixes: %w", err)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
