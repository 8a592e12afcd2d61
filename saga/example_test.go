package saga_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/saga"
)

// The shop: an order and a stock aggregate, each a small decider.

// Commands (sent by callers or by the fulfilment saga).
type (
	PlaceOrder struct {
		OrderID, SKU string
		Qty          int
	}
	PayOrder     struct{ OrderID string }
	ConfirmOrder struct{ OrderID string }
	CancelOrder  struct{ OrderID, Reason string }
	AddStock     struct {
		SKU string
		Qty int
	}
	ReserveStock struct {
		OrderID, SKU string
		Qty          int
	}
	// ReleaseStock is the compensation of ReserveStock.
	ReleaseStock struct {
		OrderID, SKU string
		Qty          int
	}
)

// Events.
type (
	OrderPlaced struct {
		OrderID string `json:"order_id"`
		SKU     string `json:"sku"`
		Qty     int    `json:"qty"`
	}
	OrderPaid      struct{ OrderID string }
	OrderConfirmed struct{ OrderID string }
	OrderCancelled struct{ OrderID, Reason string }
	StockAdded     struct{ Qty int }
	StockReserved  struct {
		OrderID, SKU string
		Qty          int
	}
	StockReleased struct {
		OrderID, SKU string
		Qty          int
	}
)

// Order is an order's state.
type Order struct{ Status, Reason string }

var errRefused = errors.New("refused")

func orderDecider() aggregate.Decider[Order, any, any] {
	return aggregate.NewDecider(
		func() Order { return Order{} },
		func(o Order, c any) ([]any, error) {
			switch c := c.(type) {
			case PlaceOrder:
				if o.Status != "" {
					return nil, fmt.Errorf("%w: order exists", errRefused)
				}
				return []any{OrderPlaced{OrderID: c.OrderID, SKU: c.SKU, Qty: c.Qty}}, nil
			case PayOrder:
				if o.Status != "placed" {
					return nil, fmt.Errorf("%w: order is %q", errRefused, o.Status)
				}
				return []any{OrderPaid{c.OrderID}}, nil
			case ConfirmOrder:
				return []any{OrderConfirmed{c.OrderID}}, nil
			case CancelOrder:
				return []any{OrderCancelled{c.OrderID, c.Reason}}, nil
			}
			return nil, fmt.Errorf("unknown command %T", c)
		},
		func(o Order, e any) Order {
			switch e := e.(type) {
			case OrderPlaced:
				o.Status = "placed"
			case OrderPaid:
				o.Status = "paid"
			case OrderConfirmed:
				o.Status = "confirmed"
			case OrderCancelled:
				o.Status, o.Reason = "cancelled", e.Reason
			}
			return o
		})
}

func stockDecider() aggregate.Decider[int, any, any] {
	return aggregate.NewDecider(
		func() int { return 0 },
		func(available int, c any) ([]any, error) {
			switch c := c.(type) {
			case AddStock:
				return []any{StockAdded{c.Qty}}, nil
			case ReserveStock:
				if available < c.Qty {
					return nil, fmt.Errorf("%w: %d of %s available, %d wanted", errRefused, available, c.SKU, c.Qty)
				}
				return []any{StockReserved{c.OrderID, c.SKU, c.Qty}}, nil
			case ReleaseStock:
				return []any{StockReleased{c.OrderID, c.SKU, c.Qty}}, nil
			}
			return nil, fmt.Errorf("unknown command %T", c)
		},
		func(available int, e any) int {
			switch e := e.(type) {
			case StockAdded:
				return available + e.Qty
			case StockReserved:
				return available - e.Qty
			case StockReleased:
				return available + e.Qty
			}
			return available
		})
}

// shop wires the aggregates to a command bus.
type shop struct {
	events, commands *eventstore.Registry
	store            eventstore.Store
	orders           *aggregate.Repository[Order, any, any]
	stock            *aggregate.Repository[int, any, any]
	bus              *commandbus.Bus
}

func newShop(store eventstore.Store) (*shop, error) {
	s := &shop{events: eventstore.NewRegistry(), commands: eventstore.NewRegistry(), store: store, bus: commandbus.New()}
	errs := []error{
		eventstore.Register[OrderPlaced](s.events, "shop.OrderPlaced"),
		eventstore.Register[OrderPaid](s.events, "shop.OrderPaid"),
		eventstore.Register[OrderConfirmed](s.events, "shop.OrderConfirmed"),
		eventstore.Register[OrderCancelled](s.events, "shop.OrderCancelled"),
		eventstore.Register[StockAdded](s.events, "shop.StockAdded"),
		eventstore.Register[StockReserved](s.events, "shop.StockReserved"),
		eventstore.Register[StockReleased](s.events, "shop.StockReleased"),
		// The saga's outbox keeps its commands encoded.
		eventstore.Register[ReserveStock](s.commands, "shop.ReserveStock"),
		eventstore.Register[ReleaseStock](s.commands, "shop.ReleaseStock"),
		eventstore.Register[ConfirmOrder](s.commands, "shop.ConfirmOrder"),
		eventstore.Register[CancelOrder](s.commands, "shop.CancelOrder"),
	}
	var err error
	s.orders, err = aggregate.NewRepository(store, s.events, orderDecider())
	errs = append(errs, err)
	s.stock, err = aggregate.NewRepository(store, s.events, stockDecider())
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	order := func(id string) string { return "order-" + id }
	sku := func(id string) string { return "stock-" + id }
	errs = []error{
		commandbus.Register(s.bus, commandbus.HandleWith(s.orders, func(_ context.Context, c PlaceOrder) (string, any, error) { return order(c.OrderID), c, nil })),
		commandbus.Register(s.bus, commandbus.HandleWith(s.orders, func(_ context.Context, c PayOrder) (string, any, error) { return order(c.OrderID), c, nil })),
		commandbus.Register(s.bus, commandbus.HandleWith(s.orders, func(_ context.Context, c ConfirmOrder) (string, any, error) { return order(c.OrderID), c, nil })),
		commandbus.Register(s.bus, commandbus.HandleWith(s.orders, func(_ context.Context, c CancelOrder) (string, any, error) { return order(c.OrderID), c, nil })),
		commandbus.Register(s.bus, commandbus.HandleWith(s.stock, func(_ context.Context, c AddStock) (string, any, error) { return sku(c.SKU), c, nil })),
		commandbus.Register(s.bus, commandbus.HandleWith(s.stock, func(_ context.Context, c ReserveStock) (string, any, error) { return sku(c.SKU), c, nil })),
		commandbus.Register(s.bus, commandbus.HandleWith(s.stock, func(_ context.Context, c ReleaseStock) (string, any, error) { return sku(c.SKU), c, nil })),
	}
	return s, errors.Join(errs...)
}

// Fulfilment is the state of one order's fulfilment.
type Fulfilment struct {
	SKU      string `json:"sku"`
	Qty      int    `json:"qty"`
	Reserved bool   `json:"reserved,omitempty"`
	Paid     bool   `json:"paid,omitempty"`
}

// PaymentWindow is how long a customer has to pay once the stock is
// reserved.
const PaymentWindow = 30 * time.Second

// fulfilment declares the saga: reserve the stock, wait for the payment
// (PaymentWindow), then confirm; when the payment does not come in time,
// compensate: release the stock and cancel the order. When the stock
// cannot be reserved, cancel the order.
func fulfilment(s *shop) (*saga.Definition[Fulfilment], error) {
	byOrder := func(id string) string { return id }
	confirm := func(st *saga.Step[Fulfilment]) {
		st.Cancel("payment")
		st.Send(ConfirmOrder{OrderID: st.ID()})
		st.Complete()
	}
	return saga.New("shop.fulfilment", s.events, s.commands,
		saga.On(func(_ eventstore.Record, e OrderPlaced) string { return byOrder(e.OrderID) },
			func(_ context.Context, st *saga.Step[Fulfilment], e OrderPlaced) error {
				*st.State() = Fulfilment{SKU: e.SKU, Qty: e.Qty}
				st.Send(ReserveStock{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty})
				return nil
			}, saga.Starts()),
		saga.On(func(_ eventstore.Record, e StockReserved) string { return byOrder(e.OrderID) },
			func(_ context.Context, st *saga.Step[Fulfilment], e StockReserved) error {
				st.State().Reserved = true
				if st.State().Paid {
					confirm(st)
					return nil
				}
				st.After("payment", PaymentWindow)
				return nil
			}),
		saga.On(func(_ eventstore.Record, e OrderPaid) string { return byOrder(e.OrderID) },
			func(_ context.Context, st *saga.Step[Fulfilment], e OrderPaid) error {
				st.State().Paid = true
				if st.State().Reserved {
					confirm(st)
				}
				return nil
			}),
		// The compensation: the payment did not come in time.
		saga.OnDeadline("payment", func(_ context.Context, st *saga.Step[Fulfilment]) error {
			f := st.State()
			st.Send(ReleaseStock{OrderID: st.ID(), SKU: f.SKU, Qty: f.Qty})
			st.Send(CancelOrder{OrderID: st.ID(), Reason: "payment timeout"})
			st.Complete()
			return nil
		}),
		// A command refused for good: the stock is short.
		saga.OnRejected(func(_ context.Context, st *saga.Step[Fulfilment], r saga.Rejection) error {
			if _, ok := r.Command.(ReserveStock); ok {
				st.Send(CancelOrder{OrderID: st.ID(), Reason: "out of stock"})
				st.Complete()
				return nil
			}
			return fmt.Errorf("unexpected rejection of %T: %w", r.Command, r.Err)
		}),
	)
}

// clock is a settable clock for deadlines.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
func send(ctx context.Context, s *shop, cmd any) error {
	_, err := s.bus.Dispatch(ctx, cmd)
	return err
}

// Order fulfilment with a payment deadline and a compensation. Drain runs
// the saga until nothing is left to do; a real service calls Run, with a
// lease (WithLease) when several processes run it.
func Example_orderFulfilment() {
	ctx := context.Background()
	s, err := newShop(memstore.New())
	if err != nil {
		fmt.Println(err)
		return
	}
	def, err := fulfilment(s)
	if err != nil {
		fmt.Println(err)
		return
	}
	var clk clock
	sagas := saga.NewMemoryStore()
	runner, err := saga.NewRunner(def, sagas, s.store, s.bus, saga.WithClock(clk.Now))
	if err != nil {
		fmt.Println(err)
		return
	}

	must := func(err error) {
		if err != nil {
			fmt.Println(err)
		}
	}
	must(send(ctx, s, AddStock{SKU: "widget", Qty: 10}))
	must(send(ctx, s, PlaceOrder{OrderID: "1", SKU: "widget", Qty: 3}))
	must(send(ctx, s, PlaceOrder{OrderID: "2", SKU: "widget", Qty: 2}))
	must(send(ctx, s, PlaceOrder{OrderID: "3", SKU: "widget", Qty: 50}))
	must(runner.Drain(ctx)) // reserves stock for 1 and 2; 3 is short

	must(send(ctx, s, PayOrder{OrderID: "1"}))
	must(runner.Drain(ctx)) // confirms 1

	clk.Advance(PaymentWindow + time.Second)
	must(runner.Drain(ctx)) // 2's payment deadline: release and cancel

	for _, id := range []string{"1", "2", "3"} {
		o, _, err := s.orders.Load(ctx, "order-"+id)
		must(err)
		fmt.Println("order", id+":", strings.TrimSpace(o.Status+" "+o.Reason))
	}
	available, _, err := s.stock.Load(ctx, "stock-widget")
	must(err)
	fmt.Println("widgets available:", available)
	done, err := sagas.List(ctx, def.Name(), saga.Filter{Status: saga.StatusDone})
	must(err)
	fmt.Println("instances done:", len(done))
	// Output:
	// order 1: confirmed
	// order 2: cancelled payment timeout
	// order 3: cancelled out of stock
	// widgets available: 7
	// instances done: 3
}
