package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Operations that can be asked of a projection's active runner from any
// process (the operator CLI uses them): Rebuild, RetryParked and SkipParked
// must run on the runner that holds the lease.
const (
	OpRebuild = "rebuild"
	OpRetry   = "retry"
	OpSkip    = "skip"
)

// ControlRequest asks the active runner of a projection to do something.
type ControlRequest struct {
	ID string `json:"id"`
	Op string `json:"op"`
	// Streams limits OpRetry to these streams (all when empty).
	Streams []string `json:"streams,omitempty"`
	// EventIDs limits OpSkip to these records (all when empty).
	EventIDs []uuid.UUID `json:"event_ids,omitempty"`
}

// ControlReply is the active runner's answer.
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

// ErrNoActiveRunner is returned by Reader.Request when no runner answered
// before the context ended: none holds the projection's lease, or it is busy.
var ErrNoActiveRunner = errors.New("projection: no active runner answered")

func (k keys) control() string         { return k.base + ":sys:ctl" }
func (k keys) reply(id string) string  { return k.base + ":sys:ctl:" + id }
func registryKey(prefix string) string { return prefix + "projections" }

const (
	// controlPoll is how often an active runner looks for requests.
	controlPoll = 200 * time.Millisecond
	// controlTTL bounds how long requests and replies stay in Redis.
	controlTTL = 10 * time.Minute
)

// controlLoop serves control requests while the runner holds the lease.
func (r *Runner) controlLoop(ctx context.Context, pr *proj) {
	t := time.NewTicker(controlPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			raw, err := r.rdb.RPop(ctx, pr.k.control()).Result()
			if errors.Is(err, redis.Nil) {
				break
			}
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("projection: read control requests", "projection", pr.name, "err", err)
				}
				break
			}
			r.serveControl(ctx, pr, raw)
		}
	}
}

func (r *Runner) serveControl(ctx context.Context, pr *proj, raw string) {
	var req ControlRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil || req.ID == "" {
		r.log.Warn("projection: malformed control request dropped", "projection", pr.name, "request", raw)
		return
	}
	reply := ControlReply{ID: req.ID}
	var err error
	switch req.Op {
	case OpRebuild:
		err = r.Rebuild(ctx, pr.name)
	case OpRetry:
		var res RetryResult
		res, err = r.RetryParked(ctx, pr.name, req.Streams...)
		reply.Applied, reply.Remaining = res.Applied, res.Remaining
	case OpSkip:
		reply.Skipped, err = r.SkipParked(ctx, pr.name, req.EventIDs...)
	default:
		err = fmt.Errorf("unknown operation %q", req.Op)
	}
	if err != nil {
		reply.Error = err.Error()
	}
	if ns, nerr := r.reader.Namespace(ctx, pr.name); nerr == nil {
		reply.Version = ns.Version
	}
	b, _ := json.Marshal(reply)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	key := pr.k.reply(req.ID)
	if _, err := r.rdb.TxPipelined(wctx, func(p redis.Pipeliner) error {
		p.LPush(wctx, key, b)
		p.Expire(wctx, key, controlTTL)
		return nil
	}); err != nil {
		r.log.Warn("projection: answer control request", "projection", pr.name, "op", req.Op, "err", err)
	}
}

// Request asks the active runner of the named projection to perform req
// (OpRebuild, OpRetry or OpSkip) and waits for its reply until ctx ends. It
// works from any process that shares the Redis server and key prefix. A
// request no runner picks up before ctx ends is withdrawn when possible and
// reported as ErrNoActiveRunner; an operation that failed on the runner is
// returned as an error, with the reply.
func (rd *Reader) Request(ctx context.Context, name string, req ControlRequest) (ControlReply, error) {
	switch req.Op {
	case OpRebuild, OpRetry, OpSkip:
	default:
		return ControlReply{}, fmt.Errorf("projection: unknown operation %q", req.Op)
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	k := newKeys(rd.prefix, name)
	b, err := json.Marshal(req)
	if err != nil {
		return ControlReply{}, err
	}
	if _, err := rd.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, k.control(), b)
		p.Expire(ctx, k.control(), controlTTL)
		return nil
	}); err != nil {
		return ControlReply{}, fmt.Errorf("projection %q: send %s request: %w", name, req.Op, err)
	}
	for {
		wait := time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, max(time.Until(dl), time.Millisecond))
		}
		res, err := rd.rdb.BRPop(ctx, wait, k.reply(req.ID)).Result()
		switch {
		case err == nil:
			var reply ControlReply
			if err := json.Unmarshal([]byte(res[1]), &reply); err != nil {
				return ControlReply{}, fmt.Errorf("projection %q: malformed reply: %w", name, err)
			}
			if reply.Error != "" {
				return reply, fmt.Errorf("projection %q: %s: %s", name, req.Op, reply.Error)
			}
			return reply, nil
		case errors.Is(err, redis.Nil):
			if ctx.Err() == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			n, _ := rd.rdb.LRem(wctx, k.control(), 1, b).Result()
			cancel()
			if n > 0 {
				return ControlReply{}, fmt.Errorf("projection %q: %w (request withdrawn): %w", name, ErrNoActiveRunner, ctx.Err())
			}
			return ControlReply{}, fmt.Errorf("projection %q: %w (the runner took the request and may still carry it out): %w", name, ErrNoActiveRunner, ctx.Err())
		}
		return ControlReply{}, fmt.Errorf("projection %q: wait for reply: %w", name, err)
	}
}

// Projections lists the names of the projections runners under this
// prefix have served.
func (rd *Reader) Projections(ctx context.Context) ([]string, error) {
	names, err := rd.rdb.SMembers(ctx, registryKey(rd.prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("projection: list projections: %w", err)
	}
	return names, nil
}
