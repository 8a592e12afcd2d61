package eventstore

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

type planned struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Inner    struct {
		OK bool
	} `json:"inner"`
}

type textValue string

func (t *textValue) UnmarshalText([]byte) error { return nil }

// The plan takes the plain struct shapes of typical events and leaves
// everything whose decoding it does not reproduce to encoding/json.
func TestJSONPlanEligibility(t *testing.T) {
	if newJSONPlan(reflect.TypeFor[planned]()) == nil {
		t.Fatal("no plan for a plain struct")
	}
	for name, typ := range map[string]reflect.Type{
		"time":      reflect.TypeFor[struct{ At time.Time }](),
		"pointer":   reflect.TypeFor[struct{ P *int }](),
		"slice":     reflect.TypeFor[struct{ S []int }](),
		"map":       reflect.TypeFor[struct{ M map[string]int }](),
		"interface": reflect.TypeFor[struct{ I any }](),
		"embedded":  reflect.TypeFor[struct{ planned }](),
		"string": reflect.TypeFor[struct {
			N int `json:",string"`
		}](),
		"number": reflect.TypeFor[struct{ N json.Number }](),
		"text":   reflect.TypeFor[struct{ T textValue }](),
		"duplicate": reflect.TypeFor[struct {
			A int `json:"a"`
			B int `json:"A"`
		}](),
		"odd tag": reflect.TypeFor[struct {
			A int `json:"a b"`
		}](),
		"not a struct": reflect.TypeFor[int](),
	} {
		if newJSONPlan(typ) != nil {
			t.Errorf("%s: a plan for %v", name, typ)
		}
	}
	var v planned
	p := newJSONPlan(reflect.TypeFor[planned]())
	if !p.decode([]byte(`{"amount":12,"currency":"EUR","inner":{"ok":true},"extra":[1,{"x":"\n"}]}`), reflect.ValueOf(&v).Elem()) {
		t.Fatal("the plan left a plain payload to encoding/json")
	}
	if v.Amount != 12 || v.Currency != "EUR" || !v.Inner.OK {
		t.Fatalf("decoded %+v", v)
	}
}
