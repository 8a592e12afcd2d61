// Package values holds the reflection helpers the command and query buses
// share: naming a message's type and recognising nil messages.
package values

import "reflect"

// TypeName names v's dynamic type for errors, logs and metrics ("<nil>" for
// nil).
func TypeName(v any) string {
	if v == nil {
		return "<nil>"
	}
	return reflect.TypeOf(v).String()
}

// IsNil reports whether v is nil or a nil pointer, map, slice, function,
// channel or interface.
func IsNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
