package lifecycle

import (
	"errors"
	"testing"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestStateStartsAndStops(t *testing.T) {
	var s State
	if err := s.Ready(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Ready before Run = %v", err)
	}
	if err := s.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(); !errors.Is(err, ErrRunTwice) {
		t.Fatalf("second Begin = %v", err)
	}
	if closed(s.Started()) || closed(s.Done()) {
		t.Fatal("channels closed while starting")
	}
	s.Up()
	s.Up()
	if !closed(s.Started()) || closed(s.Done()) {
		t.Fatal("Started must be closed, Done not")
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready while running = %v", err)
	}
	if err := s.End(nil); err != nil {
		t.Fatal(err)
	}
	if !closed(s.Done()) {
		t.Fatal("Done not closed")
	}
	if err := s.Ready(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Ready after Run = %v", err)
	}
}

func TestStateFailedStart(t *testing.T) {
	var s State
	_ = s.Begin()
	boom := errors.New("boom")
	if err := s.End(boom); err != boom {
		t.Fatalf("End = %v", err)
	}
	s.Up() // too late: no effect
	if !closed(s.Started()) || !closed(s.Done()) {
		t.Fatal("a failed start closes both channels")
	}
	if err := s.Ready(); err != boom {
		t.Fatalf("Ready = %v, want Run's error", err)
	}
}
