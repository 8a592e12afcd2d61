package eventstore

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// Codec turns payload values into bytes and back.
type Codec interface {
	// ContentType names the encoding, e.g. "application/json".
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONContentType is the content type of JSONCodec.
const JSONContentType = "application/json"

// JSONCodec encodes payloads with encoding/json. It is the default codec.
type JSONCodec struct{}

// ContentType implements Codec.
func (JSONCodec) ContentType() string { return JSONContentType }

// Marshal implements Codec.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements Codec.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Upcaster turns the encoded payload of one schema version into the next
// version's payload.
type Upcaster func(data []byte) ([]byte, error)

// Registry maps Go types to event type names and encodes and decodes
// payloads, upcasting older payload versions on read. Register every type
// before use; a Registry is safe for concurrent use.
//
// Lookups take no lock: Register publishes a new copy of the type tables,
// so that decoding, which loads of long streams do once per event, costs
// no shared-memory writes.
type Registry struct {
	codec Codec
	// jsonCodec: codec is JSONCodec, which Decode calls directly.
	jsonCodec bool

	mu     sync.Mutex // serialises Register
	tables atomic.Pointer[typeTables]
}

// typeTables are the registered types; never changed once published.
type typeTables struct {
	byName map[string]*typeInfo
	byType map[reflect.Type]*typeInfo
}

type typeInfo struct {
	name      string
	typ       reflect.Type
	version   int
	upcasters map[int]Upcaster // from version v to v+1
	// decode decodes a current-version payload into a new value of typ.
	decode func(r *Registry, ti *typeInfo, data []byte) (any, error)
	// plan decodes JSON payloads of typ without encoding/json, when it
	// can (nil: never; see jsonPlan).
	plan *jsonPlan
}

// RegistryOption configures a Registry.
type RegistryOption func(*Registry)

// WithCodec sets the codec (JSONCodec by default).
func WithCodec(c Codec) RegistryOption { return func(r *Registry) { r.codec = c } }

// NewRegistry returns an empty registry.
func NewRegistry(opts ...RegistryOption) *Registry {
	r := &Registry{codec: JSONCodec{}}
	for _, o := range opts {
		o(r)
	}
	_, r.jsonCodec = r.codec.(JSONCodec)
	r.tables.Store(&typeTables{byName: map[string]*typeInfo{}, byType: map[reflect.Type]*typeInfo{}})
	return r
}

// unmarshal decodes data into v with the registry's codec.
func (r *Registry) unmarshal(data []byte, v any) error {
	if r.jsonCodec {
		return json.Unmarshal(data, v)
	}
	return r.codec.Unmarshal(data, v)
}

// Codec returns the registry's codec.
func (r *Registry) Codec() Codec { return r.codec }

// TypeOption configures one registered type.
type TypeOption func(*typeInfo) error

// SchemaVersion sets the current payload version of the type (1 by
// default). Events written with an older version are upcast on read.
func SchemaVersion(v int) TypeOption {
	return func(t *typeInfo) error {
		if v < 1 {
			return fmt.Errorf("%w: schema version %d of %q: must be at least 1", ErrInvalidArgument, v, t.name)
		}
		t.version = v
		return nil
	}
}

// Upcast registers the function that turns a payload of version from into
// version from+1.
func Upcast(from int, fn Upcaster) TypeOption {
	return func(t *typeInfo) error {
		if from < 1 || fn == nil {
			return fmt.Errorf("%w: upcaster of %q from version %d", ErrInvalidArgument, t.name, from)
		}
		if _, dup := t.upcasters[from]; dup {
			return fmt.Errorf("%w: two upcasters of %q from version %d", ErrInvalidArgument, t.name, from)
		}
		t.upcasters[from] = fn
		return nil
	}
}

// Register maps the Go type T to the event type name. Registering a name or
// a type twice is an error. Values decode as T (so a pointer type decodes as
// a pointer).
func Register[T any](r *Registry, name string, opts ...TypeOption) error {
	typ := reflect.TypeFor[T]()
	if err := ValidateEventType(name); err != nil {
		return err
	}
	if typ.Kind() == reflect.Interface {
		return &InvalidArgumentError{Field: "event type " + name, Reason: "must be a concrete type, not an interface"}
	}
	ti := &typeInfo{name: name, typ: typ, version: 1, upcasters: map[int]Upcaster{}, decode: decodeValue[T]}
	if typ.Kind() == reflect.Pointer {
		ti.decode = decodePointer[T]
	} else if r.jsonCodec {
		ti.plan = newJSONPlan(typ)
	}
	for _, o := range opts {
		if err := o(ti); err != nil {
			return err
		}
	}
	for v := 1; v < ti.version; v++ {
		if ti.upcasters[v] == nil {
			return fmt.Errorf("%w: event type %q is at schema version %d but has no upcaster from version %d",
				ErrInvalidArgument, name, ti.version, v)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.tables.Load()
	if _, dup := cur.byName[name]; dup {
		return fmt.Errorf("%w: event type name %q registered twice", ErrInvalidArgument, name)
	}
	if prev, dup := cur.byType[typ]; dup {
		return fmt.Errorf("%w: Go type %s already registered as %q", ErrInvalidArgument, typ, prev.name)
	}
	next := &typeTables{byName: make(map[string]*typeInfo, len(cur.byName)+1), byType: make(map[reflect.Type]*typeInfo, len(cur.byType)+1)}
	for k, v := range cur.byName {
		next.byName[k] = v
	}
	for k, v := range cur.byType {
		next.byType[k] = v
	}
	next.byName[name] = ti
	next.byType[typ] = ti
	r.tables.Store(next)
	return nil
}

// decodeValue decodes a payload of a non-pointer type T.
func decodeValue[T any](r *Registry, ti *typeInfo, data []byte) (any, error) {
	v, err := unmarshalAs[T](r, ti, data)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// unmarshalAs decodes a payload of the non-pointer type T: with the type's
// JSON plan when it applies, with the codec otherwise.
func unmarshalAs[T any](r *Registry, ti *typeInfo, data []byte) (T, error) {
	var v T
	if ti.plan != nil {
		if ti.plan.decode(data, reflect.ValueOf(&v).Elem()) {
			return v, nil
		}
		var zero T
		v = zero
	}
	err := r.unmarshal(data, &v)
	return v, err
}

// decodePointer decodes a payload of a pointer type T into a new value of
// the type it points to (so a JSON null still gives a non-nil pointer).
func decodePointer[T any](r *Registry, _ *typeInfo, data []byte) (any, error) {
	p := reflect.New(reflect.TypeFor[T]().Elem())
	if err := r.unmarshal(data, p.Interface()); err != nil {
		return nil, err
	}
	return p.Interface(), nil
}

// Name returns the registered event type name of v's type.
func (r *Registry) Name(v any) (string, error) {
	ti, err := r.lookupValue(v)
	if err != nil {
		return "", err
	}
	return ti.name, nil
}

// Types returns the registered names, sorted.
func (r *Registry) Types() []string {
	t := r.tables.Load()
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *Registry) lookupValue(v any) (*typeInfo, error) {
	if v == nil {
		return nil, &InvalidArgumentError{Field: "event", Reason: "nil"}
	}
	typ := reflect.TypeOf(v)
	ti := r.tables.Load().byType[typ]
	if ti == nil {
		return nil, fmt.Errorf("%w: Go type %s is not registered", ErrUnknownEventType, typ)
	}
	return ti, nil
}

// Encode turns a registered value into an Event (with a zero ID, which the
// store fills in, and the given metadata, extended with the schema version
// and content type where they differ from the defaults).
func (r *Registry) Encode(v any, md Metadata) (Event, error) {
	ti, err := r.lookupValue(v)
	if err != nil {
		return Event{}, err
	}
	data, err := r.codec.Marshal(v)
	if err != nil {
		return Event{}, fmt.Errorf("eventstore: encode %q: %w", ti.name, err)
	}
	if ti.version > 1 || r.codec.ContentType() != JSONContentType {
		md = md.Clone()
		if md == nil {
			md = Metadata{}
		}
		if ti.version > 1 {
			md[MetaSchemaVersion] = strconv.Itoa(ti.version)
		}
		if r.codec.ContentType() != JSONContentType {
			md[MetaContentType] = r.codec.ContentType()
		}
	}
	return Event{Type: ti.name, Data: data, Metadata: md}, nil
}

// Decode turns a stored record into its registered Go value, upcasting
// older payload versions first. An unregistered type is an
// *UnknownEventTypeError; a payload that cannot be decoded is a *DecodeError;
// both name the stream and version.
func (r *Registry) Decode(rec Record) (any, error) {
	ti, data, err := r.prepare(&rec)
	if err != nil {
		return nil, err
	}
	v, err := ti.decode(r, ti, data)
	if err != nil {
		return nil, decodeError(&rec, err)
	}
	return v, nil
}

// prepare finds rec's registered type and returns its payload, upcast to
// the type's current schema version.
func (r *Registry) prepare(rec *Record) (*typeInfo, []byte, error) {
	ti := r.tables.Load().byName[rec.Type]
	if ti == nil {
		return nil, nil, &UnknownEventTypeError{Type: rec.Type, Stream: rec.StreamID, Version: rec.Version}
	}
	if len(rec.Metadata) == 0 {
		// Version 1 of the JSON codec: no upcasting, nothing to check.
		if ti.version == 1 && r.jsonCodec {
			return ti, rec.Data, nil
		}
	}
	ct := rec.Metadata.Get(MetaContentType)
	if ct == "" {
		ct = JSONContentType
	}
	if ct != r.codec.ContentType() {
		return nil, nil, decodeError(rec, fmt.Errorf("payload content type %q, codec reads %q", ct, r.codec.ContentType()))
	}
	data := rec.Data
	from := 1
	if s := rec.Metadata.Get(MetaSchemaVersion); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			return nil, nil, decodeError(rec, fmt.Errorf("bad schema version %q", s))
		}
		from = v
	}
	if from > ti.version {
		return nil, nil, decodeError(rec, fmt.Errorf("payload schema version %d is newer than this program's %d", from, ti.version))
	}
	for v := from; v < ti.version; v++ {
		up, err := ti.upcasters[v](data)
		if err != nil {
			return nil, nil, decodeError(rec, fmt.Errorf("upcast from version %d: %w", v, err))
		}
		data = up
	}
	return ti, data, nil
}

func decodeError(rec *Record, err error) error {
	return &DecodeError{Type: rec.Type, Stream: rec.StreamID, Version: rec.Version, Err: err}
}

// DecodeAs decodes rec and asserts that the value is a T (usually the
// interface a decider's events implement). When T is the registered type
// itself, the payload is decoded straight into the result.
func DecodeAs[T any](r *Registry, rec Record) (T, error) {
	var zero T
	ti, data, err := r.prepare(&rec)
	if err != nil {
		return zero, err
	}
	if ti.typ == reflect.TypeFor[T]() && ti.typ.Kind() != reflect.Pointer {
		v, err := unmarshalAs[T](r, ti, data)
		if err != nil {
			return zero, decodeError(&rec, err)
		}
		return v, nil
	}
	v, err := ti.decode(r, ti, data)
	if err != nil {
		return zero, decodeError(&rec, err)
	}
	t, ok := v.(T)
	if !ok {
		return zero, &DecodeError{Type: rec.Type, Stream: rec.StreamID, Version: rec.Version,
			Err: fmt.Errorf("decoded %T, which is not a %s", v, reflect.TypeFor[T]())}
	}
	return t, nil
}
