package aggregate_test

import (
	"fmt"

	"github.com/eskit/eskit/aggregate"
)

// A decider made of three functions, its type parameters inferred from
// them. (A named decider type needs no constructor: NewRepository infers
// them from its methods.)
func ExampleNewDecider() {
	type (
		add   struct{ N int }
		added struct{ N int }
	)
	counter := aggregate.NewDecider(
		func() int { return 0 },
		func(n int, c add) ([]added, error) { return []added{{N: c.N}}, nil },
		func(n int, e added) int { return n + e.N },
	)
	events, err := counter.Decide(counter.Initial(), add{N: 2})
	fmt.Println(events, err, aggregate.Fold(counter, 40, events...))
	// Output: [{2}] <nil> 42
}
