package eventstore

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A jsonPlan decodes JSON objects into one struct type faster than
// encoding/json, for the types and inputs where its result is certainly
// encoding/json's: structs (nested or not) of exported fields of boolean,
// integer, floating-point and string kinds, and payloads of plain strings
// and numbers. It reports false for anything else (an escape in a string,
// a number of another form, a type mismatch, invalid JSON...), and the
// registry then decodes with encoding/json into a fresh value, so that
// results and errors are always encoding/json's.
//
// Event payloads are decoded on every load of a stream and by every
// projection; the plan skips encoding/json's validation pass, its
// reflection on every value and most of its allocations.
type jsonPlan struct {
	fields []jsonField
	// byName maps each field's JSON key to its index in fields.
	byName map[string]int
}

type jsonField struct {
	name  string // JSON key
	index int    // Go field index
	kind  reflect.Kind
	bits  int       // of floats, for strconv.ParseFloat
	sub   *jsonPlan // of struct kinds
}

// maxPlanDepth bounds the nesting of planned structs, and maxSkipDepth the
// nesting of the values the plan skips (unknown keys): deeper input goes
// to encoding/json.
const (
	maxPlanDepth = 8
	maxSkipDepth = 64
)

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	jsonNumber      = reflect.TypeFor[json.Number]()
)

// newJSONPlan returns the plan of t, or nil when t is not a type whose
// decoding the plan reproduces exactly.
func newJSONPlan(t reflect.Type) *jsonPlan {
	return planStruct(t, 0)
}

func planStruct(t reflect.Type, depth int) *jsonPlan {
	if t.Kind() != reflect.Struct || depth > maxPlanDepth || customDecoding(t) {
		return nil
	}
	p := &jsonPlan{byName: map[string]int{}}
	folded := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			return nil // embedding: encoding/json's field promotion rules
		}
		if !f.IsExported() {
			continue // encoding/json ignores them
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			if tag == "-" {
				continue
			}
			n, opts, _ := strings.Cut(tag, ",")
			for o := range strings.SplitSeq(opts, ",") {
				if o != "" && o != "omitempty" && o != "omitzero" {
					return nil // ",string" and the like
				}
			}
			if n != "" {
				name = n
			}
		}
		if !plainName(name) || folded[strings.ToLower(name)] {
			return nil
		}
		folded[strings.ToLower(name)] = true
		jf := jsonField{name: name, index: i, kind: f.Type.Kind()}
		if customDecoding(f.Type) || f.Type == jsonNumber {
			return nil // decodes itself; json.Number takes numbers and checks strings
		}
		switch jf.kind {
		case reflect.Bool, reflect.String,
			reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		case reflect.Float32, reflect.Float64:
			jf.bits = f.Type.Bits()
		case reflect.Struct:
			if jf.sub = planStruct(f.Type, depth+1); jf.sub == nil {
				return nil
			}
		default:
			return nil
		}
		p.byName[name] = len(p.fields)
		p.fields = append(p.fields, jf)
	}
	return p
}

// customDecoding reports a type that decodes itself (or whose pointer
// does).
func customDecoding(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshaler) || pt.Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || pt.Implements(textUnmarshaler)
}

// plainName reports an ASCII key of letters, digits, '_' and '-', which
// encoding/json uses as it is and matches case-insensitively by ASCII
// folding alone.
func plainName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// decode decodes data into v, a settable struct value of the plan's type
// holding its zero value. false means: use encoding/json (v may then hold
// part of the input).
func (p *jsonPlan) decode(data []byte, v reflect.Value) bool {
	d := jsonScanner{data: data}
	d.space()
	if d.literal("null") {
		d.space()
		return d.i == len(d.data)
	}
	if !p.object(&d, v) {
		return false
	}
	d.space()
	return d.i == len(d.data)
}

// jsonScanner reads a JSON text.
type jsonScanner struct {
	data []byte
	i    int
}

func (d *jsonScanner) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// colon reads the ':' after a member's key, with the space around it,
// and reports whether it was there.
func (d *jsonScanner) colon() bool {
	d.space()
	if d.next() != ':' {
		return false
	}
	d.i++
	d.space()
	return true
}

// more reads what follows a member or an element: a ',' and the space
// after it (more is true: another one follows), or the closing byte
// (consumed; more is false and ok is true). Anything else is malformed:
// both are false.
func (d *jsonScanner) more(closing byte) (more, ok bool) {
	d.space()
	switch d.next() {
	case ',':
		d.i++
		d.space()
		return true, true
	case closing:
		d.i++
		return false, true
	}
	return false, false
}

// next returns the next byte, or 0 at the end.
func (d *jsonScanner) next() byte {
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

func (d *jsonScanner) literal(s string) bool {
	if len(d.data)-d.i >= len(s) && string(d.data[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// object decodes an object into the struct v.
func (p *jsonPlan) object(d *jsonScanner, v reflect.Value) bool {
	if d.next() != '{' {
		return false
	}
	d.i++
	d.space()
	if d.next() == '}' {
		d.i++
		return true
	}
	for {
		key, ok := d.plainString()
		if !ok || !isASCII(key) {
			// encoding/json folds non-ASCII keys by Unicode rules (ſ
			// matches s): leave them to it.
			return false
		}
		if !d.colon() {
			return false
		}
		f := p.field(key)
		if f == nil {
			if !d.skip(0) {
				return false
			}
		} else if !f.value(d, v.Field(f.index)) {
			return false
		}
		if more, ok := d.more('}'); !more {
			return ok
		}
	}
}

// field finds the field of a key as encoding/json does: the exact name,
// else a name equal under (here ASCII) case folding.
func (p *jsonPlan) field(key []byte) *jsonField {
	if i, ok := p.byName[string(key)]; ok {
		return &p.fields[i]
	}
	for i := range p.fields {
		if asciiEqualFold(p.fields[i].name, key) {
			return &p.fields[i]
		}
	}
	return nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func asciiEqualFold(s string, b []byte) bool {
	if len(s) != len(b) {
		return false
	}
	for i := 0; i < len(s); i++ {
		x, y := s[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// value decodes one value into the field's value fv.
func (f *jsonField) value(d *jsonScanner, fv reflect.Value) bool {
	if d.literal("null") {
		return true // encoding/json leaves the field as it is
	}
	switch f.kind {
	case reflect.String:
		s, ok := d.plainString()
		if !ok {
			return false
		}
		fv.SetString(string(s))
	case reflect.Bool:
		switch {
		case d.literal("true"):
			fv.SetBool(true)
		case d.literal("false"):
			fv.SetBool(false)
		default:
			return false
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, integer, ok := d.number()
		if !ok || !integer {
			return false
		}
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil || fv.OverflowInt(n) {
			return false
		}
		fv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s, integer, ok := d.number()
		if !ok || !integer || s[0] == '-' {
			return false
		}
		n, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil || fv.OverflowUint(n) {
			return false
		}
		fv.SetUint(n)
	case reflect.Float32, reflect.Float64:
		s, _, ok := d.number()
		if !ok {
			return false
		}
		n, err := strconv.ParseFloat(string(s), f.bits)
		if err != nil || fv.OverflowFloat(n) {
			return false
		}
		fv.SetFloat(n)
	case reflect.Struct:
		return f.sub.object(d, fv)
	default:
		return false
	}
	return true
}

// plainString reads a string without escapes or control characters whose
// bytes are valid UTF-8 (encoding/json would change anything else), and
// returns its contents.
func (d *jsonScanner) plainString() ([]byte, bool) {
	if d.next() != '"' {
		return nil, false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			s := d.data[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			d.i = j + 1
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// number reads a number of JSON's grammar; integer reports one without a
// fraction or an exponent.
func (d *jsonScanner) number() (s []byte, integer, ok bool) {
	start := d.i
	j := d.i
	if j < len(d.data) && d.data[j] == '-' {
		j++
	}
	switch {
	case j < len(d.data) && d.data[j] == '0':
		j++
	case j < len(d.data) && '1' <= d.data[j] && d.data[j] <= '9':
		for j < len(d.data) && '0' <= d.data[j] && d.data[j] <= '9' {
			j++
		}
	default:
		return nil, false, false
	}
	integer = true
	if j < len(d.data) && d.data[j] == '.' {
		integer = false
		j++
		if j >= len(d.data) || d.data[j] < '0' || d.data[j] > '9' {
			return nil, false, false
		}
		for j < len(d.data) && '0' <= d.data[j] && d.data[j] <= '9' {
			j++
		}
	}
	if j < len(d.data) && (d.data[j] == 'e' || d.data[j] == 'E') {
		integer = false
		j++
		if j < len(d.data) && (d.data[j] == '+' || d.data[j] == '-') {
			j++
		}
		if j >= len(d.data) || d.data[j] < '0' || d.data[j] > '9' {
			return nil, false, false
		}
		for j < len(d.data) && '0' <= d.data[j] && d.data[j] <= '9' {
			j++
		}
	}
	d.i = j
	return d.data[start:j], integer, true
}

// skip reads over any valid JSON value (of an unknown key).
func (d *jsonScanner) skip(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	switch d.next() {
	case '"':
		return d.skipString()
	case '{':
		d.i++
		d.space()
		if d.next() == '}' {
			d.i++
			return true
		}
		for {
			if !d.skipString() {
				return false
			}
			if !d.colon() {
				return false
			}
			if !d.skip(depth + 1) {
				return false
			}
			if more, ok := d.more('}'); !more {
				return ok
			}
		}
	case '[':
		d.i++
		d.space()
		if d.next() == ']' {
			d.i++
			return true
		}
		for {
			if !d.skip(depth + 1) {
				return false
			}
			if more, ok := d.more(']'); !more {
				return ok
			}
		}
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	_, _, ok := d.number()
	return ok
}

// skipString reads over a string, escapes included, as encoding/json's
// validation accepts it.
func (d *jsonScanner) skipString() bool {
	if d.next() != '"' {
		return false
	}
	for j := d.i + 1; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			d.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(d.data) {
				return false
			}
			switch d.data[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(d.data) {
					return false
				}
				for _, h := range d.data[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}
