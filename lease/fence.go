package lease

import (
	"fmt"
	"sync"
)

// CheckToken is the fencing rule, for a resource that keeps the highest
// token it has accepted per lease name: a write carrying l's token is
// accepted when the token is at least highest (equal: the same holder
// writes again), and refused with an error matching ErrFenced (and
// ErrLost) when it is lower, because a newer holder has written since. A
// resource applying it records max(highest, l.Token) with every write it
// accepts, in the same atomic step as the write.
func CheckToken(l Lease, highest uint64) error {
	if l.Token < highest {
		return Fenced(l, fmt.Sprintf("the resource has accepted token %d", highest))
	}
	return nil
}

// Fence guards an in-process resource written by lease holders with
// CheckToken: it remembers the highest token it accepted per lease name.
// Its zero value is ready; it is safe for concurrent use.
//
// Fencing is what makes a lease safe, since a lease alone cannot stop a
// holder that froze (a GC or VM pause, SIGSTOP, a partition) between
// checking its lease and writing: the holder's write arrives late, after
// the lease expired and another holder took over, and the resource refuses
// it because a higher token has been seen (Kleppmann's fencing tokens).
// Where the lease lives in the same database as the guarded write, the
// write's transaction checks the current lease itself, which is stronger:
// see pgstore's Leases.Check and redislease's Guard.
type Fence struct {
	mu      sync.Mutex
	highest map[string]uint64
}

// Write calls write when l's token passes CheckToken, with no other write
// of the fence in between, and records l's token when write succeeds. It
// returns write's error, or the fencing error without calling write.
func (f *Fence) Write(l Lease, write func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := CheckToken(l, f.highest[l.Name]); err != nil {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	if f.highest == nil {
		f.highest = map[string]uint64{}
	}
	f.highest[l.Name] = max(f.highest[l.Name], l.Token)
	return nil
}

// Highest returns the highest token of the lease name that the fence has
// accepted (0 for none).
func (f *Fence) Highest(name string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.highest[name]
}
