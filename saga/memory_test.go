package saga_test

import (
	"testing"

	"github.com/eskit/eskit/saga"
	"github.com/eskit/eskit/saga/sagatest"
)

func TestMemoryStore(t *testing.T) {
	sagatest.Run(t, func(*testing.T) saga.Store { return saga.NewMemoryStore() })
}
