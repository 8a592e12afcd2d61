// Package lifecycle is the one life cycle of eskit's long-running parts
// (outbox.Relay, projection.Runner): a Run method that
//
//   - returns an error at once when the part cannot start (a configuration
//     or a server it cannot work with: no retry would help),
//   - otherwise runs until its context ends, retrying transient
//     infrastructure faults itself, and then returns nil,
//
// and three methods to watch it from elsewhere: Started (a channel closed
// once Run is past its start-up checks, or has returned), Done (closed
// once Run has returned) and Ready (nil while Run runs past its start-up
// checks; why not otherwise).
//
// The public packages return the sentinel errors below under their own
// names (outbox.ErrNotStarted is ErrNotStarted, ...), so errors.Is works
// across them.
package lifecycle

import (
	"errors"
	"sync"
)

// Errors Ready returns while Run does not run.
var (
	// ErrNotStarted: Run has not been called, or has not finished its
	// start-up checks.
	ErrNotStarted = errors.New("eskit: not started (Run has not passed its start-up checks)")
	// ErrStopped: Run returned nil, since its context ended.
	ErrStopped = errors.New("eskit: stopped (Run has returned)")
	// ErrRunTwice: Run was called a second time; a part runs once.
	ErrRunTwice = errors.New("eskit: Run called twice (a part runs once; make a new one)")
)

// State tracks one Run. The zero value is ready to use; it must not be
// copied after first use.
type State struct {
	once    sync.Once
	mu      sync.Mutex
	begun   bool
	up      bool
	ended   bool
	err     error
	started chan struct{}
	done    chan struct{}
}

func (s *State) init() {
	s.once.Do(func() {
		s.started = make(chan struct{})
		s.done = make(chan struct{})
	})
}

// Begin marks the start of Run; it fails with ErrRunTwice on a second call.
func (s *State) Begin() error {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.begun {
		return ErrRunTwice
	}
	s.begun = true
	return nil
}

// Up marks Run past its start-up checks.
func (s *State) Up() {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up || s.ended {
		return
	}
	s.up = true
	close(s.started)
}

// End marks Run as returned with err, and returns err.
func (s *State) End(err error) error {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return err
	}
	s.ended, s.err = true, err
	if !s.up {
		close(s.started)
	}
	close(s.done)
	return err
}

// Started returns a channel closed once Run is past its start-up checks, or
// has returned (Ready then says which).
func (s *State) Started() <-chan struct{} {
	s.init()
	return s.started
}

// Done returns a channel closed once Run has returned.
func (s *State) Done() <-chan struct{} {
	s.init()
	return s.done
}

// Ready returns nil while Run runs past its start-up checks; ErrNotStarted
// before; once Run has returned, its error, or ErrStopped when it returned
// nil.
func (s *State) Ready() error {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ended && s.err != nil:
		return s.err
	case s.ended:
		return ErrStopped
	case s.up:
		return nil
	}
	return ErrNotStarted
}
