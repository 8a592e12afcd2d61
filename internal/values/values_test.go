package values

import "testing"

func TestTypeNameAndIsNil(t *testing.T) {
	type cmd struct{}
	var p *cmd
	var m map[string]int
	cases := []struct {
		v    any
		name string
		nil  bool
	}{
		{nil, "<nil>", true},
		{cmd{}, "values.cmd", false},
		{&cmd{}, "*values.cmd", false},
		{p, "*values.cmd", true},
		{m, "map[string]int", true},
		{0, "int", false},
	}
	for _, c := range cases {
		if got := TypeName(c.v); got != c.name {
			t.Errorf("TypeName(%#v) = %q, want %q", c.v, got, c.name)
		}
		if got := IsNil(c.v); got != c.nil {
			t.Errorf("IsNil(%#v) = %v, want %v", c.v, got, c.nil)
		}
	}
}
