// Package sagatest is the conformance suite of saga.Store: every store
// (the memory one, pgstore's, a third party's) must pass Run.
package sagatest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/saga"
)

// Run runs the suite; newStore returns an empty store for each subtest
// (and cleans it up through t).
func Run(t *testing.T, newStore func(t *testing.T) saga.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s saga.Store)
	}{
		{"Claim", testClaim},
		{"Fencing", testFencing},
		{"CommitAtomic", testCommitAtomic},
		{"Outbox", testOutbox},
		{"Deadlines", testDeadlines},
		{"Held", testHeld},
		{"ListGetCount", testList},
		{"RetrySkip", testRetrySkip},
		{"HostileIDs", testHostileIDs},
		{"Partitions", testPartitions},
		{"Progress", testProgress},
		{"ConcurrentClaims", testConcurrentClaims},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Base is the time the suite's deadlines and commands count from.
var base = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func pos(n uint64) eventstore.Position { return eventstore.Position{Tx: n, Seq: n} }

func claim(t *testing.T, s saga.Store, f saga.Fence) saga.Claimed {
	t.Helper()
	c, err := s.Claim(ctxOf(t), f)
	if err != nil {
		t.Fatalf("claim %+v: %v", f, err)
	}
	return c
}

func commit(t *testing.T, s saga.Store, c saga.Commit) {
	t.Helper()
	if c.Now.IsZero() {
		c.Now = base
	}
	if err := s.Commit(ctxOf(t), c); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func load(t *testing.T, s saga.Store, sg, id string) saga.Instance {
	t.Helper()
	in, ok, err := s.Load(ctxOf(t), sg, id)
	if err != nil || !ok {
		t.Fatalf("load %q: found %v, %v", id, ok, err)
	}
	return in
}

func get(t *testing.T, s saga.Store, sg, id string) saga.Instance {
	t.Helper()
	in, err := s.Get(ctxOf(t), sg, id)
	if err != nil {
		t.Fatalf("get %q: %v", id, err)
	}
	return in
}

func cmd(n int) saga.Command {
	return saga.Command{ID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("cmd", n))), Type: "test.Cmd", Data: []byte(fmt.Sprintf(`{"n":%d}`, n)),
		Metadata: eventstore.Metadata{"k": "v"}}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got %v, want an error matching %v", what, err, target)
	}
}

func testClaim(t *testing.T, s saga.Store) {
	f := saga.Fence{Saga: "s", Partition: 0}
	c := claim(t, s, f)
	if c.Token != 1 || !c.Checkpoint.IsZero() {
		t.Fatalf("first claim: %+v, want token 1 at the start", c)
	}
	f.Token = c.Token
	commit(t, s, saga.Commit{Fence: f, Checkpoint: pos(5)})
	c = claim(t, s, saga.Fence{Saga: "s", Partition: 0, Token: 7})
	if c.Token != 7 || c.Checkpoint != pos(5) {
		t.Fatalf("claim 7: %+v, want token 7 at %s", c, pos(5))
	}
	c = claim(t, s, saga.Fence{Saga: "s", Partition: 0})
	if c.Token != 8 {
		t.Fatalf("claim next after 7: token %d", c.Token)
	}
	_, err := s.Claim(ctxOf(t), saga.Fence{Saga: "s", Partition: 0, Token: 3})
	var fe *saga.FencedError
	if !errors.As(err, &fe) || fe.Current != 8 || !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("claim 3 after 8: got %v, want a *FencedError (current 8) matching lease.ErrFenced", err)
	}
	// Another partition and another saga are independent.
	if c := claim(t, s, saga.Fence{Saga: "s", Partition: 1}); c.Token != 1 || !c.Checkpoint.IsZero() {
		t.Fatalf("partition 1: %+v", c)
	}
	if c := claim(t, s, saga.Fence{Saga: "other", Partition: 0}); c.Token != 1 {
		t.Fatalf("saga other: %+v", c)
	}
	// A checkpoint never goes back.
	f.Token = 8
	err = s.Commit(ctxOf(t), saga.Commit{Fence: f, Checkpoint: pos(4), Now: base})
	wantErr(t, err, saga.ErrInvalidArgument, "checkpoint back from 5 to 4")
	if c := claim(t, s, f); c.Checkpoint != pos(5) {
		t.Fatalf("checkpoint after the refused commit: %s", c.Checkpoint)
	}
}

func testFencing(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	old := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	commit(t, s, saga.Commit{Fence: old, Checkpoint: pos(1), Updates: []saga.Update{{ID: "a", Enqueue: []saga.Command{cmd(1)}}}})
	cur := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	in := load(t, s, "s", "a")
	// Every write and partition read of the deposed holder is refused,
	// and changes nothing.
	checks := map[string]error{
		"commit":        s.Commit(ctx, saga.Commit{Fence: old, Checkpoint: pos(9), Now: base, Updates: []saga.Update{{ID: "a", Version: in.Version, State: []byte(`{"x":1}`)}}}),
		"sent":          s.Sent(ctx, old, "a", get(t, s, "s", "a").Commands[0].Seq),
		"failed":        s.Failed(ctx, old, "a", get(t, s, "s", "a").Commands[0], true),
		"commit (none)": s.Commit(ctx, saga.Commit{Fence: saga.Fence{Saga: "s", Partition: 0, Token: 99}, Now: base}),
	}
	_, checks["due commands"] = s.DueCommands(ctx, old, base, 10)
	_, checks["due deadlines"] = s.DueDeadlines(ctx, old, base, 10)
	_, checks["due records"] = s.DueRecords(ctx, old, 10)
	_, _, checks["next due"] = s.NextDue(ctx, old)
	for what, err := range checks {
		var fe *saga.FencedError
		if !errors.As(err, &fe) || !errors.Is(err, saga.ErrFenced) || !errors.Is(err, lease.ErrLost) {
			t.Errorf("%s under a deposed token: got %v, want a *FencedError", what, err)
		}
	}
	after := get(t, s, "s", "a")
	if after.Version != in.Version || len(after.Commands) != 1 || after.Park != nil || string(after.State) == `{"x":1}` {
		t.Fatalf("the deposed holder's writes changed the instance: %+v", after)
	}
	if c := claim(t, s, cur); c.Checkpoint != pos(1) {
		t.Fatalf("the deposed holder's checkpoint was written: %s", c.Checkpoint)
	}
	// The current holder writes.
	commit(t, s, saga.Commit{Fence: cur, Checkpoint: pos(2)})
}

func testCommitAtomic(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	commit(t, s, saga.Commit{Fence: f, Checkpoint: pos(1), Updates: []saga.Update{
		{ID: "a", State: []byte(`{"n":1}`), LastPosition: pos(1)},
		{ID: "b", State: []byte(`{"n":2}`), LastPosition: pos(1)},
	}})
	a := load(t, s, "s", "a")
	if a.Version != 1 || string(a.State) != `{"n":1}` || a.Status != saga.StatusRunning || a.LastPosition != pos(1) || a.Partition != 0 || a.Saga != "s" {
		t.Fatalf("instance a after its first commit: %+v", a)
	}
	// A stale version refuses the whole commit: b's update, the new
	// instance c and the checkpoint are not written either.
	err := s.Commit(ctx, saga.Commit{Fence: f, Checkpoint: pos(2), Now: base, Updates: []saga.Update{
		{ID: "b", Version: 1, State: []byte(`{"n":3}`)},
		{ID: "c", State: []byte(`{}`)},
		{ID: "a", Version: 0, State: []byte(`{"n":4}`)},
	}})
	var ce *saga.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, saga.ErrConflict) {
		t.Fatalf("stale version: got %v, want a *ConflictError", err)
	}
	if b := load(t, s, "s", "b"); b.Version != 1 || string(b.State) != `{"n":2}` {
		t.Fatalf("b changed by a refused commit: %+v", b)
	}
	if _, ok, _ := s.Load(ctx, "s", "c"); ok {
		t.Fatal("c created by a refused commit")
	}
	if c := claim(t, s, f); c.Checkpoint != pos(1) {
		t.Fatalf("checkpoint moved by a refused commit: %s", c.Checkpoint)
	}
	// A nil state keeps the state; versions count commits.
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: 1}}})
	if a := load(t, s, "s", "a"); a.Version != 2 || string(a.State) != `{"n":1}` {
		t.Fatalf("a after a commit without state: %+v", a)
	}
	// Completing marks it done.
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: 2, Complete: true, Schedule: []saga.Deadline{{Name: "d", ID: uuid.New(), Due: base}}}}})
	if a := load(t, s, "s", "a"); !a.Done || a.Status != saga.StatusDone || len(a.Deadlines) != 0 {
		t.Fatalf("a completed: %+v", a)
	}
}

func testOutbox(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{
		{ID: "a", State: []byte(`{}`), Enqueue: []saga.Command{cmd(1), cmd(2)}},
		{ID: "b", State: []byte(`{}`), Enqueue: []saga.Command{cmd(3)}},
	}})
	due, err := s.DueCommands(ctx, f, base, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 2 || due[0].Instance != "a" || due[0].Command.ID != cmd(1).ID || due[1].Instance != "b" || due[1].Command.ID != cmd(3).ID {
		t.Fatalf("due commands: %+v, want the oldest of a and of b", due)
	}
	c1 := due[0].Command
	if c1.Type != "test.Cmd" || string(c1.Data) != `{"n":1}` || c1.Metadata.Get("k") != "v" || c1.Seq == 0 {
		t.Fatalf("command round trip: %+v", c1)
	}
	// A failure postpones a's head; a's second command waits behind it.
	c1.Attempts, c1.LastError, c1.NextAttempt = 1, "boom", base.Add(time.Minute)
	if err := s.Failed(ctx, f, "a", c1, false); err != nil {
		t.Fatal(err)
	}
	due, _ = s.DueCommands(ctx, f, base, 10)
	if len(due) != 1 || due[0].Instance != "b" {
		t.Fatalf("due after a's failure: %+v, want b only", due)
	}
	next, ok, err := s.NextDue(ctx, f)
	if err != nil || !ok || !next.Equal(base) {
		t.Fatalf("next due: %v %v %v, want %v (b's command)", next, ok, err, base)
	}
	due, _ = s.DueCommands(ctx, f, base.Add(time.Minute), 10)
	if len(due) != 2 || due[0].Command.Attempts != 0 && due[0].Instance == "b" {
		t.Fatalf("due a minute later: %+v", due)
	}
	for _, d := range due {
		if d.Instance == "a" && (d.Command.Attempts != 1 || d.Command.LastError != "boom" || !d.Command.NextAttempt.Equal(base.Add(time.Minute))) {
			t.Fatalf("a's failed command: %+v", d.Command)
		}
	}
	if got, _ := s.DueCommands(ctx, f, base.Add(time.Minute), 1); len(got) != 1 {
		t.Fatalf("limit 1: %d commands", len(got))
	}
	if err := s.Sent(ctx, f, "a", c1.Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.Sent(ctx, f, "a", c1.Seq); err != nil {
		t.Fatalf("sent twice: %v", err)
	}
	due, _ = s.DueCommands(ctx, f, base, 10)
	if len(due) != 2 || due[0].Instance != "a" || due[0].Command.ID != cmd(2).ID {
		t.Fatalf("after sending a's first: %+v", due)
	}
	// Parking on a command stops the instance's outbox.
	c2 := due[0].Command
	c2.Attempts, c2.LastError = 8, "still failing"
	if err := s.Failed(ctx, f, "a", c2, true); err != nil {
		t.Fatal(err)
	}
	a := get(t, s, "s", "a")
	if a.Status != saga.StatusParked || a.Park == nil || a.Park.Kind != saga.ParkCommand || a.Park.Ref != c2.ID.String() || a.Park.Error != "still failing" || a.Park.Attempts != 8 {
		t.Fatalf("a parked: %+v park %+v", a, a.Park)
	}
	due, _ = s.DueCommands(ctx, f, base.Add(time.Hour), 10)
	if len(due) != 1 || due[0].Instance != "b" {
		t.Fatalf("due with a parked: %+v", due)
	}
	// A step that handled a command's outcome drops it in its commit.
	b := load(t, s, "s", "b")
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "b", Version: b.Version, Sent: due[0].Command.Seq, Enqueue: []saga.Command{cmd(4)}}}})
	bb := get(t, s, "s", "b")
	if len(bb.Commands) != 1 || bb.Commands[0].ID != cmd(4).ID {
		t.Fatalf("b's outbox: %+v", bb.Commands)
	}
}

func testDeadlines(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	d1 := saga.Deadline{Name: "pay", ID: uuid.New(), Due: base.Add(time.Second)}
	d2 := saga.Deadline{Name: "ship", ID: uuid.New(), Due: base.Add(time.Hour)}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", State: []byte(`{}`), Schedule: []saga.Deadline{d1, d2}}}})
	a := load(t, s, "s", "a")
	if a.Status != saga.StatusWaiting || len(a.Deadlines) != 2 {
		t.Fatalf("a with deadlines: %+v", a)
	}
	if got, ok := a.Deadline("pay"); !ok || got.ID != d1.ID || !got.Due.Equal(d1.Due) {
		t.Fatalf("pay deadline: %+v", got)
	}
	if due, _ := s.DueDeadlines(ctx, f, base, 10); len(due) != 0 {
		t.Fatalf("due before time: %+v", due)
	}
	if next, ok, _ := s.NextDue(ctx, f); !ok || !next.Equal(d1.Due) {
		t.Fatalf("next due: %v %v", next, ok)
	}
	due, err := s.DueDeadlines(ctx, f, d1.Due, 10)
	if err != nil || len(due) != 1 || due[0].Instance != "a" || due[0].Deadline.ID != d1.ID {
		t.Fatalf("due at the deadline: %+v %v", due, err)
	}
	// Firing drops it, once: a second firing is a conflict.
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: a.Version, Fired: &d1}}})
	a = load(t, s, "s", "a")
	err = s.Commit(ctx, saga.Commit{Fence: f, Now: base, Updates: []saga.Update{{ID: "a", Version: a.Version, Fired: &d1}}})
	wantErr(t, err, saga.ErrConflict, "firing a deadline twice")
	// A rescheduled deadline has a new ID: firing the old one conflicts.
	d3 := saga.Deadline{Name: "ship", ID: uuid.New(), Due: base.Add(2 * time.Hour)}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: a.Version, Schedule: []saga.Deadline{d3}}}})
	a = load(t, s, "s", "a")
	if len(a.Deadlines) != 1 || a.Deadlines[0].ID != d3.ID {
		t.Fatalf("rescheduled: %+v", a.Deadlines)
	}
	err = s.Commit(ctx, saga.Commit{Fence: f, Now: base, Updates: []saga.Update{{ID: "a", Version: a.Version, Fired: &d2}}})
	wantErr(t, err, saga.ErrConflict, "firing a rescheduled deadline's old ID")
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: a.Version, Cancel: []string{"ship", "never-set"}}}})
	a = load(t, s, "s", "a")
	if len(a.Deadlines) != 0 || a.Status != saga.StatusRunning {
		t.Fatalf("cancelled: %+v", a)
	}
	if _, ok, _ := s.NextDue(ctx, f); ok {
		t.Fatal("next due with nothing pending")
	}
	// Deadlines of a parked instance, or one holding records, wait.
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{
		{ID: "p", State: []byte(`{}`), Schedule: []saga.Deadline{d1}, Park: &saga.Park{Kind: saga.ParkRecord, Error: "x", Attempts: 1}, Hold: []eventstore.Record{record(1)}},
		{ID: "h", State: []byte(`{}`), Schedule: []saga.Deadline{d1}, Hold: []eventstore.Record{record(2)}},
	}})
	if due, _ := s.DueDeadlines(ctx, f, base.Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("due deadlines of parked or holding instances: %+v", due)
	}
}

func record(n uint64) eventstore.Record {
	return eventstore.Record{
		Event:    eventstore.Event{ID: uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprint("rec", n))), Type: "test.Happened", Data: []byte(fmt.Sprintf(`{"n":%d}`, n)), Metadata: eventstore.Metadata{"correlation_id": "c"}},
		StreamID: "thing-ü-" + fmt.Sprint(n), Version: int64(n), Position: pos(n), RecordedAt: base.Add(time.Duration(n) * time.Millisecond),
	}
}

func sameRecord(a, b eventstore.Record) bool {
	return a.ID == b.ID && a.Type == b.Type && string(a.Data) == string(b.Data) && a.Metadata.Get("correlation_id") == b.Metadata.Get("correlation_id") &&
		a.StreamID == b.StreamID && a.Version == b.Version && a.Position == b.Position && a.RecordedAt.Equal(b.RecordedAt)
}

func testHeld(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	commit(t, s, saga.Commit{Fence: f, Checkpoint: pos(2), Updates: []saga.Update{{ID: "a", State: []byte(`{}`), Hold: []eventstore.Record{record(1), record(2)}}}})
	commit(t, s, saga.Commit{Fence: f, Checkpoint: pos(3), Updates: []saga.Update{{ID: "a", Version: 1, Hold: []eventstore.Record{record(3)}}}})
	a := get(t, s, "s", "a")
	if a.Held != 3 || len(a.HeldRecords) != 3 {
		t.Fatalf("held: %d %+v", a.Held, a.HeldRecords)
	}
	for i, h := range a.HeldRecords {
		if !sameRecord(h.Record, record(uint64(i+1))) {
			t.Fatalf("held record %d: %+v, want %+v", i, h.Record, record(uint64(i+1)))
		}
	}
	due, err := s.DueRecords(ctx, f, 10)
	if err != nil || len(due) != 1 || due[0].Instance != "a" || !sameRecord(due[0].Held.Record, record(1)) {
		t.Fatalf("due records: %+v %v", due, err)
	}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: 2, Unhold: due[0].Held.Seq, LastPosition: pos(1)}}})
	due, _ = s.DueRecords(ctx, f, 10)
	if len(due) != 1 || !sameRecord(due[0].Held.Record, record(2)) {
		t.Fatalf("due records after the first: %+v", due)
	}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "a", Version: 3, Park: &saga.Park{Kind: saga.ParkRecord, Ref: record(2).ID.String(), Error: "bad", Attempts: 3}}}})
	if due, _ := s.DueRecords(ctx, f, 10); len(due) != 0 {
		t.Fatalf("due records of a parked instance: %+v", due)
	}
}

func testList(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	var ups []saga.Update
	for i := range 25 {
		u := saga.Update{ID: fmt.Sprintf("i%02d", i), State: []byte(`{}`)}
		switch i % 4 {
		case 1:
			u.Schedule = []saga.Deadline{{Name: "d", ID: uuid.New(), Due: base.Add(time.Duration(i) * time.Minute)}}
			if i == 5 {
				u.Schedule = append(u.Schedule, saga.Deadline{Name: "early", ID: uuid.New(), Due: base})
			}
		case 2:
			u.Park = &saga.Park{Kind: saga.ParkRecord, Error: "e", Attempts: 1}
			u.Hold = []eventstore.Record{record(uint64(2 * i)), record(uint64(2*i + 1))}
		case 3:
			u.Complete = true
		}
		ups = append(ups, u)
	}
	commit(t, s, saga.Commit{Fence: f, Updates: ups})
	fo := saga.Fence{Saga: "other", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "other"}).Token}
	commit(t, s, saga.Commit{Fence: fo, Updates: []saga.Update{{ID: "i00", State: []byte(`{}`)}}})

	counts, err := s.Count(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	want := map[saga.Status]int{saga.StatusRunning: 7, saga.StatusWaiting: 6, saga.StatusParked: 6, saga.StatusDone: 6}
	for st, n := range want {
		if counts[st] != n {
			t.Fatalf("counts: %v, want %v", counts, want)
		}
	}
	// Paging through one status.
	var ids []string
	after := ""
	for {
		page, err := s.List(ctx, "s", saga.Filter{Status: saga.StatusRunning, After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, in := range page {
			if in.Status != saga.StatusRunning || in.Saga != "s" {
				t.Fatalf("listed %+v", in)
			}
			ids = append(ids, in.ID)
		}
		after = page[len(page)-1].ID
	}
	if strings.Join(ids, ",") != "i00,i04,i08,i12,i16,i20,i24" {
		t.Fatalf("running instances: %v", ids)
	}
	all, err := s.List(ctx, "s", saga.Filter{})
	if err != nil || len(all) != 25 || all[0].ID != "i00" || all[24].ID != "i24" {
		t.Fatalf("all: %d %v", len(all), err)
	}
	// Each listed instance carries its deadlines, the next first, and
	// its held count, as Load has them; not its commands or held records.
	for _, in := range all {
		loaded, found, err := s.Load(ctx, "s", in.ID)
		if err != nil || !found {
			t.Fatalf("load %s: %v %v", in.ID, found, err)
		}
		if len(in.Deadlines) != len(loaded.Deadlines) || in.Held != loaded.Held || len(in.Commands) != 0 || len(in.HeldRecords) != 0 {
			t.Fatalf("listed %s: %d deadlines, %d held; loaded: %d, %d", in.ID, len(in.Deadlines), in.Held, len(loaded.Deadlines), loaded.Held)
		}
		for j, d := range in.Deadlines {
			if d.Name != loaded.Deadlines[j].Name || d.ID != loaded.Deadlines[j].ID || !d.Due.Equal(loaded.Deadlines[j].Due) {
				t.Fatalf("listed %s: deadlines %v, loaded %v", in.ID, in.Deadlines, loaded.Deadlines)
			}
		}
	}
	if d := all[5].Deadlines; len(d) != 2 || d[0].Name != "early" || !d[0].Due.Equal(base) {
		t.Fatalf("listed i05: deadlines %v, want early first", d)
	}
	if d := all[9].Deadlines; len(d) != 1 || !d[0].Due.Equal(base.Add(9*time.Minute)) {
		t.Fatalf("listed i09: deadlines %v", d)
	}
	if all[2].Held != 2 || all[6].Held != 2 || all[0].Held != 0 {
		t.Fatalf("held counts: i02 %d, i06 %d, i00 %d; want 2, 2, 0", all[2].Held, all[6].Held, all[0].Held)
	}
	// Per partition: the instances above are all in partition 0.
	f3 := saga.Fence{Saga: "s", Partition: 3, Token: claim(t, s, saga.Fence{Saga: "s", Partition: 3}).Token}
	commit(t, s, saga.Commit{Fence: f3, Updates: []saga.Update{{ID: "p3", Partition: 3, State: []byte(`{}`), Complete: true}}})
	p0, err := s.CountPartition(ctx, "s", 0)
	if err != nil {
		t.Fatal(err)
	}
	p3, err := s.CountPartition(ctx, "s", 3)
	if err != nil {
		t.Fatal(err)
	}
	if p0[saga.StatusDone] != 6 || p0[saga.StatusWaiting] != 6 || p3[saga.StatusDone] != 1 || len(p3) != 1 {
		t.Fatalf("counts of partition 0: %v, of 3: %v", p0, p3)
	}
	if p1, err := s.CountPartition(ctx, "s", 1); err != nil || len(p1) != 0 {
		t.Fatalf("counts of partition 1: %v, %v", p1, err)
	}
	_, err = s.CountPartition(ctx, "s", -1)
	wantErr(t, err, saga.ErrInvalidArgument, "a negative partition")
	_, err = s.List(ctx, "s", saga.Filter{Status: "sleeping"})
	wantErr(t, err, saga.ErrInvalidArgument, "unknown status")
	_, err = s.Get(ctx, "s", "nope")
	wantErr(t, err, saga.ErrNotFound, "get of a missing instance")
	in := get(t, s, "s", "i02")
	if in.Park == nil || in.Park.Kind != saga.ParkRecord || in.CreatedAt.IsZero() || in.UpdatedAt.IsZero() {
		t.Fatalf("get i02: %+v", in)
	}
}

func testRetrySkip(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s"}).Token}
	d := saga.Deadline{Name: "d", ID: uuid.New(), Due: base}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{
		{ID: "cmd", State: []byte(`{}`), Enqueue: []saga.Command{cmd(1), cmd(2)}},
		{ID: "rec", State: []byte(`{}`), Hold: []eventstore.Record{record(1), record(2)}, Park: &saga.Park{Kind: saga.ParkRecord, Ref: record(1).ID.String(), Error: "e", Attempts: 3}},
		{ID: "dl", State: []byte(`{}`), Schedule: []saga.Deadline{d}, Park: &saga.Park{Kind: saga.ParkDeadline, Ref: "d", Error: "e", Attempts: 3}},
		{ID: "live", State: []byte(`{}`)},
	}})
	c := get(t, s, "s", "cmd").Commands[0]
	c.Attempts, c.LastError, c.NextAttempt = 8, "down", base.Add(time.Hour)
	if err := s.Failed(ctx, f, "cmd", c, true); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Retry(ctx, "s", "live"), saga.ErrNotParked, "retry of a live instance")
	wantErr(t, s.Skip(ctx, "s", "live"), saga.ErrNotParked, "skip of a live instance")
	wantErr(t, s.Retry(ctx, "s", "missing"), saga.ErrNotFound, "retry of a missing instance")

	// Retry: the command is due at once with its attempts reset.
	v := load(t, s, "s", "cmd").Version
	if err := s.Retry(ctx, "s", "cmd"); err != nil {
		t.Fatal(err)
	}
	in := get(t, s, "s", "cmd")
	if in.Park != nil || in.Status != saga.StatusRunning || in.Version <= v || in.Commands[0].Attempts != 0 {
		t.Fatalf("retried: %+v", in)
	}
	if due, _ := s.DueCommands(ctx, f, base, 10); len(due) != 1 || due[0].Command.ID != cmd(1).ID {
		t.Fatalf("due after retry: %+v", due)
	}
	// Skip: the command is dropped, the next one goes.
	if err := s.Failed(ctx, f, "cmd", in.Commands[0], true); err != nil {
		t.Fatal(err)
	}
	if err := s.Skip(ctx, "s", "cmd"); err != nil {
		t.Fatal(err)
	}
	in = get(t, s, "s", "cmd")
	if in.Park != nil || len(in.Commands) != 1 || in.Commands[0].ID != cmd(2).ID {
		t.Fatalf("skipped a command: %+v", in)
	}
	// A held record: retry keeps it, skip drops it.
	if err := s.Retry(ctx, "s", "rec"); err != nil {
		t.Fatal(err)
	}
	if in := get(t, s, "s", "rec"); in.Park != nil || in.Held != 2 {
		t.Fatalf("retried record: %+v", in)
	}
	commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: "rec", Version: load(t, s, "s", "rec").Version, Park: &saga.Park{Kind: saga.ParkRecord, Ref: record(1).ID.String(), Error: "e", Attempts: 3}}}})
	if err := s.Skip(ctx, "s", "rec"); err != nil {
		t.Fatal(err)
	}
	if in := get(t, s, "s", "rec"); in.Park != nil || in.Held != 1 || !sameRecord(in.HeldRecords[0].Record, record(2)) {
		t.Fatalf("skipped a record: %+v", in)
	}
	// A deadline: skip drops it.
	if err := s.Skip(ctx, "s", "dl"); err != nil {
		t.Fatal(err)
	}
	if in := get(t, s, "s", "dl"); in.Park != nil || len(in.Deadlines) != 0 || in.Status != saga.StatusRunning {
		t.Fatalf("skipped a deadline: %+v", in)
	}
	// An operator's action races a runner's commit: the runner's stale
	// version conflicts.
	err := s.Commit(ctx, saga.Commit{Fence: f, Now: base, Updates: []saga.Update{{ID: "cmd", Version: v}}})
	wantErr(t, err, saga.ErrConflict, "commit after an operator's retry")
}

func testHostileIDs(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f := saga.Fence{Saga: "s/é 🚀", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s/é 🚀"}).Token}
	good := []string{"ü-ñ-日本-🚀", strings.Repeat("x", saga.MaxInstanceIDLength), `'; DROP TABLE x; --`, "a b\tc\nd", "%_*"}
	for i, id := range good {
		commit(t, s, saga.Commit{Fence: f, Updates: []saga.Update{{ID: id, State: []byte(`{}`), Schedule: []saga.Deadline{{Name: "é " + fmt.Sprint(i), ID: uuid.New(), Due: base}}}}})
		in := get(t, s, f.Saga, id)
		if in.ID != id || len(in.Deadlines) != 1 || in.Deadlines[0].Name != "é "+fmt.Sprint(i) {
			t.Fatalf("instance %q round trip: %+v", id, in)
		}
	}
	if n, _ := s.List(ctx, f.Saga, saga.Filter{}); len(n) != len(good) {
		t.Fatalf("listed %d instances, want %d", len(n), len(good))
	}
	bad := []string{"", strings.Repeat("x", saga.MaxInstanceIDLength+1), "a\x00b", "\xff\xfe"}
	for _, id := range bad {
		err := s.Commit(ctx, saga.Commit{Fence: f, Now: base, Updates: []saga.Update{{ID: id, State: []byte(`{}`)}}})
		var ie *saga.InvalidError
		if !errors.As(err, &ie) || !errors.Is(err, saga.ErrInvalidArgument) {
			t.Fatalf("commit of instance %q: got %v, want an *InvalidError", id, err)
		}
		_, _, err = s.Load(ctx, f.Saga, id)
		wantErr(t, err, saga.ErrInvalidArgument, "load of a bad ID")
		_, err = s.Get(ctx, f.Saga, id)
		wantErr(t, err, saga.ErrInvalidArgument, "get of a bad ID")
		wantErr(t, s.Retry(ctx, f.Saga, id), saga.ErrInvalidArgument, "retry of a bad ID")
		wantErr(t, s.Skip(ctx, f.Saga, id), saga.ErrInvalidArgument, "skip of a bad ID")
	}
	_, err := s.Claim(ctx, saga.Fence{Saga: "a\x00b"})
	wantErr(t, err, saga.ErrInvalidArgument, "claim of a saga name with NUL")
	err = s.Commit(ctx, saga.Commit{Fence: f, Now: base, Updates: []saga.Update{{ID: "ok", State: []byte(`{}`), Schedule: []saga.Deadline{{Name: "x\x00", ID: uuid.New(), Due: base}}}}})
	wantErr(t, err, saga.ErrInvalidArgument, "deadline name with NUL")
	if _, ok, _ := s.Load(ctx, f.Saga, "ok"); ok {
		t.Fatal("a refused commit created its instance")
	}
}

func testPartitions(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	f0 := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s", Partition: 0}).Token}
	f1 := saga.Fence{Saga: "s", Partition: 1, Token: claim(t, s, saga.Fence{Saga: "s", Partition: 1}).Token}
	commit(t, s, saga.Commit{Fence: f0, Updates: []saga.Update{{ID: "a", Partition: 0, State: []byte(`{}`), Enqueue: []saga.Command{cmd(1)}}}})
	commit(t, s, saga.Commit{Fence: f1, Updates: []saga.Update{{ID: "b", Partition: 1, State: []byte(`{}`), Enqueue: []saga.Command{cmd(2)}}}})
	due0, _ := s.DueCommands(ctx, f0, base, 10)
	due1, _ := s.DueCommands(ctx, f1, base, 10)
	if len(due0) != 1 || due0[0].Instance != "a" || len(due1) != 1 || due1[0].Instance != "b" {
		t.Fatalf("due by partition: %+v / %+v", due0, due1)
	}
	// Partition 1's holder cannot write partition 0's instance, nor make
	// a new instance of partition 0.
	err := s.Commit(ctx, saga.Commit{Fence: f1, Now: base, Updates: []saga.Update{{ID: "a", Version: 1, Partition: 1}}})
	wantErr(t, err, saga.ErrInvalidArgument, "update of another partition's instance")
	err = s.Commit(ctx, saga.Commit{Fence: f1, Now: base, Updates: []saga.Update{{ID: "c", Partition: 0, State: []byte(`{}`)}}})
	wantErr(t, err, saga.ErrInvalidArgument, "new instance of another partition")
}

// Progress tells each claimed partition's checkpoint and token, and when
// the checkpoint last moved.
func testProgress(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	if got, err := s.Progress(ctx, "s"); err != nil || len(got) != 0 {
		t.Fatalf("progress of a saga never claimed: %+v, %v", got, err)
	}
	f0 := saga.Fence{Saga: "s", Partition: 0, Token: claim(t, s, saga.Fence{Saga: "s", Partition: 0}).Token}
	f2 := saga.Fence{Saga: "s", Partition: 2, Token: claim(t, s, saga.Fence{Saga: "s", Partition: 2}).Token}
	claim(t, s, saga.Fence{Saga: "other", Partition: 1})
	got, err := s.Progress(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Partition != 0 || got[1].Partition != 2 || got[0].Token != f0.Token || got[1].Token != f2.Token ||
		!got[0].Checkpoint.IsZero() || got[0].UpdatedAt.IsZero() {
		t.Fatalf("progress after the claims: %+v", got)
	}
	commit(t, s, saga.Commit{Fence: f2, Checkpoint: pos(7), Now: time.Now()})
	after, err := s.Progress(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || after[1].Checkpoint != pos(7) || after[0].Checkpoint != got[0].Checkpoint || after[1].UpdatedAt.Before(got[1].UpdatedAt) {
		t.Fatalf("progress after a checkpoint of partition 2: %+v (before: %+v)", after, got)
	}
	if _, err := s.Progress(ctx, ""); !errors.Is(err, saga.ErrInvalidArgument) {
		t.Fatalf("progress of an empty saga name: %v", err)
	}
}

func testConcurrentClaims(t *testing.T, s saga.Store) {
	ctx := ctxOf(t)
	var wg sync.WaitGroup
	for i := 1; i <= 20; i++ {
		wg.Go(func() {
			f := saga.Fence{Saga: "s", Partition: 0, Token: uint64(i)}
			if _, err := s.Claim(ctx, f); err != nil && !errors.Is(err, saga.ErrFenced) {
				t.Errorf("claim %d: %v", i, err)
				return
			}
			for j := range 5 {
				err := s.Commit(ctx, saga.Commit{Fence: f, Now: base, Updates: []saga.Update{{ID: fmt.Sprintf("t%d-%d", i, j), State: []byte(`{}`)}}})
				if err != nil && !errors.Is(err, saga.ErrFenced) {
					t.Errorf("commit %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	// Whatever interleaving: after token 20's claim, only 20 writes.
	c := claim(t, s, saga.Fence{Saga: "s", Partition: 0})
	if c.Token != 21 {
		t.Fatalf("token after the race: %d, want 21", c.Token)
	}
	err := s.Commit(ctx, saga.Commit{Fence: saga.Fence{Saga: "s", Partition: 0, Token: 20}, Now: base})
	wantErr(t, err, saga.ErrFenced, "commit of 20 after 21")
}
