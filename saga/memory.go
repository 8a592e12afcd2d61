package saga

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// MemoryStore is a Store in memory: for tests, tools and the embedded
// default. It is safe for concurrent use.
type MemoryStore struct {
	mu          sync.Mutex
	seq         int64
	checkpoints map[partKey]*memCheckpoint
	instances   map[instKey]*memInstance
}

var _ Store = (*MemoryStore)(nil)

type partKey struct {
	saga      string
	partition int
}

type instKey struct{ saga, id string }

type memCheckpoint struct {
	pos   eventstore.Position
	token uint64
	at    time.Time // when pos last moved or the partition was last claimed
}

type memInstance struct {
	in        Instance // without details
	commands  []Command
	deadlines []Deadline
	held      []HeldRecord
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{checkpoints: map[partKey]*memCheckpoint{}, instances: map[instKey]*memInstance{}}
}

// Claim implements Store.
func (m *MemoryStore) Claim(ctx context.Context, f Fence) (Claimed, error) {
	if err := f.validateClaim(); err != nil {
		return Claimed{}, err
	}
	if err := ctx.Err(); err != nil {
		return Claimed{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := partKey{f.Saga, f.Partition}
	cp := m.checkpoints[k]
	if cp == nil {
		cp = &memCheckpoint{}
		m.checkpoints[k] = cp
	}
	if f.Token == 0 {
		f.Token = cp.token + 1
	}
	if cp.token > f.Token {
		return Claimed{}, &FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token, Current: cp.token}
	}
	cp.token = f.Token
	cp.at = time.Now()
	return Claimed{Checkpoint: cp.pos, Token: f.Token}, nil
}

// fenced checks f against the partition's token. m.mu is held.
func (m *MemoryStore) fenced(f Fence) error {
	cp := m.checkpoints[partKey{f.Saga, f.Partition}]
	var cur uint64
	if cp != nil {
		cur = cp.token
	}
	if cur != f.Token {
		return &FencedError{Saga: f.Saga, Partition: f.Partition, Token: f.Token, Current: cur}
	}
	return nil
}

// Commit implements Store.
func (m *MemoryStore) Commit(ctx context.Context, c Commit) error {
	if err := ValidateCommit(c); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fenced(c.Fence); err != nil {
		return err
	}
	cp := m.checkpoints[partKey{c.Fence.Saga, c.Fence.Partition}]
	if !c.Checkpoint.IsZero() && c.Checkpoint.Before(cp.pos) {
		return &InvalidError{Field: "checkpoint", Value: c.Checkpoint.String(), Reason: "before the stored " + cp.pos.String()}
	}
	// Check everything first, then apply: all or nothing.
	seen := map[string]bool{}
	for _, u := range c.Updates {
		if seen[u.ID] {
			return &InvalidError{Field: "commit", Value: u.ID, Reason: "updates the instance twice"}
		}
		seen[u.ID] = true
		mi := m.instances[instKey{c.Fence.Saga, u.ID}]
		if err := checkUpdate(c.Fence, mi, u); err != nil {
			return err
		}
	}
	for _, u := range c.Updates {
		k := instKey{c.Fence.Saga, u.ID}
		mi := m.instances[k]
		if mi == nil {
			mi = &memInstance{in: Instance{Saga: c.Fence.Saga, ID: u.ID, Partition: u.Partition, CreatedAt: now}}
			m.instances[k] = mi
		}
		m.apply(mi, u, now)
	}
	if !c.Checkpoint.IsZero() {
		if c.Checkpoint != cp.pos {
			cp.at = now
		}
		cp.pos = c.Checkpoint
	}
	return nil
}

func checkUpdate(f Fence, mi *memInstance, u Update) error {
	var version int64
	if mi != nil {
		version = mi.in.Version
		if mi.in.Partition != f.Partition {
			return &InvalidError{Field: "instance", Value: u.ID, Reason: fmt.Sprintf("belongs to partition %d, not %d", mi.in.Partition, f.Partition)}
		}
	} else if u.Partition != f.Partition {
		return &InvalidError{Field: "instance", Value: u.ID, Reason: fmt.Sprintf("new in partition %d under a fence of partition %d", u.Partition, f.Partition)}
	}
	if version != u.Version {
		return &ConflictError{Saga: f.Saga, ID: u.ID, Reason: fmt.Sprintf("version %d, loaded at %d", version, u.Version)}
	}
	if u.Fired != nil {
		ok := mi != nil && slices.ContainsFunc(mi.deadlines, func(d Deadline) bool { return d.Name == u.Fired.Name && d.ID == u.Fired.ID })
		if !ok {
			return &ConflictError{Saga: f.Saga, ID: u.ID, Reason: fmt.Sprintf("deadline %q (%s) is no longer pending", u.Fired.Name, u.Fired.ID)}
		}
	}
	return nil
}

// apply applies a checked update. m.mu is held.
func (m *MemoryStore) apply(mi *memInstance, u Update, now time.Time) {
	in := &mi.in
	in.Version++
	in.UpdatedAt = now
	if u.State != nil {
		in.State = bytes.Clone(u.State)
	}
	if !u.LastPosition.IsZero() && u.LastPosition.After(in.LastPosition) {
		in.LastPosition = u.LastPosition
	}
	if u.Fired != nil {
		mi.dropDeadline(u.Fired.Name)
	}
	for _, n := range u.Cancel {
		mi.dropDeadline(n)
	}
	for _, d := range u.Schedule {
		mi.dropDeadline(d.Name)
		d.Due = d.Due.UTC()
		mi.deadlines = append(mi.deadlines, d)
	}
	if u.Complete {
		in.Done = true
		mi.deadlines = nil
	}
	if u.Sent != 0 {
		mi.commands = slices.DeleteFunc(mi.commands, func(c Command) bool { return c.Seq == u.Sent })
	}
	for _, c := range u.Enqueue {
		m.seq++
		c.Seq = m.seq
		if c.NextAttempt.IsZero() {
			c.NextAttempt = now
		}
		c.NextAttempt = c.NextAttempt.UTC()
		c.Data = bytes.Clone(c.Data)
		c.Metadata = c.Metadata.Clone()
		mi.commands = append(mi.commands, c)
	}
	if u.Unhold != 0 {
		mi.held = slices.DeleteFunc(mi.held, func(h HeldRecord) bool { return h.Seq == u.Unhold })
	}
	for _, r := range u.Hold {
		m.seq++
		mi.held = append(mi.held, HeldRecord{Seq: m.seq, Record: cloneRecord(r)})
	}
	if u.Unpark {
		in.Park = nil
	}
	if u.Park != nil {
		p := *u.Park
		in.Park = &p
	}
	mi.status()
}

func (mi *memInstance) dropDeadline(name string) {
	mi.deadlines = slices.DeleteFunc(mi.deadlines, func(d Deadline) bool { return d.Name == name })
}

func (mi *memInstance) status() {
	mi.in.Status = DeriveStatus(mi.in.Done, mi.in.Park, len(mi.deadlines))
}

func cloneRecord(r eventstore.Record) eventstore.Record {
	r.Data = bytes.Clone(r.Data)
	r.Metadata = r.Metadata.Clone()
	return r
}

// snapshot returns a copy of the instance; details adds commands and held
// records. m.mu is held.
func (mi *memInstance) snapshot(details bool) Instance {
	in := mi.in
	in.State = bytes.Clone(in.State)
	if in.Park != nil {
		p := *in.Park
		in.Park = &p
	}
	in.Deadlines = slices.Clone(mi.deadlines)
	slices.SortFunc(in.Deadlines, func(a, b Deadline) int { return cmp.Or(a.Due.Compare(b.Due), cmp.Compare(a.Name, b.Name)) })
	in.Held = len(mi.held)
	if details {
		for _, c := range mi.commands {
			c.Data = bytes.Clone(c.Data)
			c.Metadata = c.Metadata.Clone()
			in.Commands = append(in.Commands, c)
		}
		for _, h := range mi.held {
			in.HeldRecords = append(in.HeldRecords, HeldRecord{Seq: h.Seq, Record: cloneRecord(h.Record)})
		}
	}
	return in
}

// Load implements Store.
func (m *MemoryStore) Load(ctx context.Context, saga, id string) (Instance, bool, error) {
	if err := ValidateRef(saga, id); err != nil {
		return Instance{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return Instance{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mi := m.instances[instKey{saga, id}]
	if mi == nil {
		return Instance{}, false, nil
	}
	return mi.snapshot(false), true, nil
}

// partition returns the instances of f's partition. m.mu is held.
func (m *MemoryStore) partition(f Fence) []*memInstance {
	var out []*memInstance
	for k, mi := range m.instances {
		if k.saga == f.Saga && mi.in.Partition == f.Partition {
			out = append(out, mi)
		}
	}
	return out
}

// readFenced runs fn under m.mu once f passed its checks.
func (m *MemoryStore) readFenced(ctx context.Context, f Fence, fn func()) error {
	if err := f.validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fenced(f); err != nil {
		return err
	}
	fn()
	return nil
}

// DueCommands implements Store.
func (m *MemoryStore) DueCommands(ctx context.Context, f Fence, now time.Time, limit int) ([]DueCommand, error) {
	var out []DueCommand
	err := m.readFenced(ctx, f, func() {
		for _, mi := range m.partition(f) {
			if mi.in.Park != nil || len(mi.commands) == 0 {
				continue
			}
			c := mi.commands[0]
			if c.NextAttempt.After(now) {
				continue
			}
			c.Data = bytes.Clone(c.Data)
			c.Metadata = c.Metadata.Clone()
			out = append(out, DueCommand{Instance: mi.in.ID, Command: c})
		}
	})
	slices.SortFunc(out, func(a, b DueCommand) int {
		return cmp.Or(a.Command.NextAttempt.Compare(b.Command.NextAttempt), cmp.Compare(a.Command.Seq, b.Command.Seq))
	})
	return capped(out, limit), err
}

func capped[T any](s []T, limit int) []T {
	if limit > 0 && len(s) > limit {
		return s[:limit]
	}
	return s
}

// Sent implements Store.
func (m *MemoryStore) Sent(ctx context.Context, f Fence, id string, seq int64) error {
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	return m.readFenced(ctx, f, func() {
		mi := m.instances[instKey{f.Saga, id}]
		if mi == nil {
			return
		}
		n := len(mi.commands)
		mi.commands = slices.DeleteFunc(mi.commands, func(c Command) bool { return c.Seq == seq })
		if len(mi.commands) != n {
			mi.in.Version++
			mi.in.UpdatedAt = time.Now()
		}
	})
}

// Failed implements Store.
func (m *MemoryStore) Failed(ctx context.Context, f Fence, id string, cmd Command, park bool) error {
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	return m.readFenced(ctx, f, func() {
		mi := m.instances[instKey{f.Saga, id}]
		if mi == nil {
			return
		}
		i := slices.IndexFunc(mi.commands, func(c Command) bool { return c.Seq == cmd.Seq })
		if i < 0 {
			return
		}
		c := &mi.commands[i]
		c.Attempts, c.NextAttempt, c.LastError = cmd.Attempts, cmd.NextAttempt.UTC(), cmd.LastError
		if park {
			mi.in.Park = &Park{Kind: ParkCommand, Ref: c.ID.String(), Error: cmd.LastError, Attempts: cmd.Attempts}
		}
		mi.in.Version++
		mi.in.UpdatedAt = time.Now()
		mi.status()
	})
}

// DueDeadlines implements Store.
func (m *MemoryStore) DueDeadlines(ctx context.Context, f Fence, horizon time.Time, limit int) ([]DueDeadline, error) {
	var out []DueDeadline
	err := m.readFenced(ctx, f, func() {
		for _, mi := range m.partition(f) {
			if mi.in.Park != nil || len(mi.held) > 0 {
				continue
			}
			for _, d := range mi.deadlines {
				if !d.Due.After(horizon) {
					out = append(out, DueDeadline{Instance: mi.in.ID, Deadline: d})
				}
			}
		}
	})
	slices.SortFunc(out, func(a, b DueDeadline) int {
		return cmp.Or(a.Deadline.Due.Compare(b.Deadline.Due), cmp.Compare(a.Instance, b.Instance), cmp.Compare(a.Deadline.Name, b.Deadline.Name))
	})
	return capped(out, limit), err
}

// DueRecords implements Store.
func (m *MemoryStore) DueRecords(ctx context.Context, f Fence, limit int) ([]DueRecord, error) {
	var out []DueRecord
	err := m.readFenced(ctx, f, func() {
		for _, mi := range m.partition(f) {
			if mi.in.Park != nil || len(mi.held) == 0 {
				continue
			}
			h := mi.held[0]
			out = append(out, DueRecord{Instance: mi.in.ID, Held: HeldRecord{Seq: h.Seq, Record: cloneRecord(h.Record)}})
		}
	})
	slices.SortFunc(out, func(a, b DueRecord) int { return cmp.Compare(a.Held.Seq, b.Held.Seq) })
	return capped(out, limit), err
}

// NextDue implements Store.
func (m *MemoryStore) NextDue(ctx context.Context, f Fence) (time.Time, bool, error) {
	var (
		next time.Time
		ok   bool
	)
	see := func(t time.Time) {
		if !ok || t.Before(next) {
			next, ok = t, true
		}
	}
	err := m.readFenced(ctx, f, func() {
		for _, mi := range m.partition(f) {
			if mi.in.Park != nil {
				continue
			}
			if len(mi.commands) > 0 {
				see(mi.commands[0].NextAttempt)
			}
			if len(mi.held) == 0 {
				for _, d := range mi.deadlines {
					see(d.Due)
				}
			}
		}
	})
	return next, ok, err
}

// List implements Store.
func (m *MemoryStore) List(ctx context.Context, saga string, f Filter) ([]Instance, error) {
	if err := ValidateName(saga); err != nil {
		return nil, err
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, &InvalidError{Field: "status", Value: string(f.Status), Reason: "unknown"}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Instance
	for k, mi := range m.instances {
		if k.saga != saga || (f.Status != "" && mi.in.Status != f.Status) || (f.After != "" && k.id <= f.After) {
			continue
		}
		out = append(out, mi.snapshot(false))
	}
	slices.SortFunc(out, func(a, b Instance) int { return cmp.Compare(a.ID, b.ID) })
	return capped(out, limit), nil
}

// Get implements Store.
func (m *MemoryStore) Get(ctx context.Context, saga, id string) (Instance, error) {
	if err := ValidateRef(saga, id); err != nil {
		return Instance{}, err
	}
	if err := ctx.Err(); err != nil {
		return Instance{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mi := m.instances[instKey{saga, id}]
	if mi == nil {
		return Instance{}, fmt.Errorf("%w: saga %q instance %q", ErrNotFound, saga, id)
	}
	return mi.snapshot(true), nil
}

// Count implements Store.
func (m *MemoryStore) Count(ctx context.Context, saga string) (map[Status]int, error) {
	if err := ValidateName(saga); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[Status]int{}
	for k, mi := range m.instances {
		if k.saga == saga {
			out[mi.in.Status]++
		}
	}
	return out, nil
}

// CountPartition implements Store.
func (m *MemoryStore) CountPartition(ctx context.Context, saga string, partition int) (map[Status]int, error) {
	if err := ValidateName(saga); err != nil {
		return nil, err
	}
	if partition < 0 || partition >= MaxPartitions {
		return nil, &InvalidError{Field: "partition", Value: strconv.Itoa(partition), Reason: "out of range"}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[Status]int{}
	for k, mi := range m.instances {
		if k.saga == saga && mi.in.Partition == partition {
			out[mi.in.Status]++
		}
	}
	return out, nil
}

// Progress implements Store.
func (m *MemoryStore) Progress(ctx context.Context, saga string) ([]PartitionProgress, error) {
	if err := ValidateName(saga); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []PartitionProgress
	for k, cp := range m.checkpoints {
		if k.saga == saga {
			out = append(out, PartitionProgress{Partition: k.partition, Checkpoint: cp.pos, Token: cp.token, UpdatedAt: cp.at})
		}
	}
	slices.SortFunc(out, func(a, b PartitionProgress) int { return a.Partition - b.Partition })
	return out, nil
}

// parked returns the parked instance for an operator action. m.mu is held.
func (m *MemoryStore) parked(saga, id string) (*memInstance, error) {
	mi := m.instances[instKey{saga, id}]
	if mi == nil {
		return nil, fmt.Errorf("%w: saga %q instance %q", ErrNotFound, saga, id)
	}
	if mi.in.Park == nil {
		return nil, fmt.Errorf("%w: saga %q instance %q is %s", ErrNotParked, saga, id, mi.in.Status)
	}
	return mi, nil
}

// Retry implements Store.
func (m *MemoryStore) Retry(ctx context.Context, saga, id string) error {
	return m.operate(ctx, saga, id, false)
}

// Skip implements Store.
func (m *MemoryStore) Skip(ctx context.Context, saga, id string) error {
	return m.operate(ctx, saga, id, true)
}

func (m *MemoryStore) operate(ctx context.Context, saga, id string, skip bool) error {
	if err := ValidateRef(saga, id); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mi, err := m.parked(saga, id)
	if err != nil {
		return err
	}
	p := mi.in.Park
	switch p.Kind {
	case ParkCommand:
		if len(mi.commands) > 0 {
			if skip {
				mi.commands = mi.commands[1:]
			} else {
				mi.commands[0].Attempts, mi.commands[0].NextAttempt = 0, time.Time{}
			}
		}
	case ParkRecord:
		if skip && len(mi.held) > 0 {
			mi.held = mi.held[1:]
		}
	case ParkDeadline:
		if skip {
			mi.dropDeadline(p.Ref)
		}
	}
	mi.in.Park = nil
	mi.in.Version++
	mi.in.UpdatedAt = time.Now()
	mi.status()
	return nil
}
