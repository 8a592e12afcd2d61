// Package require is the assertion helper of eskit's own tests in the
// modules users import (the core, the PostgreSQL store): the standard
// library only, so that testing them adds nothing to a user's build list.
// Its functions mirror the subset of testify's require that those tests
// use, and stop the test at the first failure.
package require

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TB is what the assertions need of a test.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

var _ TB = (testing.TB)(nil)

func message(msgAndArgs []any) string {
	switch len(msgAndArgs) {
	case 0:
		return ""
	case 1:
		if s, ok := msgAndArgs[0].(string); ok {
			return "\n" + s
		}
		return "\n" + fmt.Sprint(msgAndArgs[0])
	}
	if f, ok := msgAndArgs[0].(string); ok {
		return "\n" + fmt.Sprintf(f, msgAndArgs[1:]...)
	}
	return "\n" + fmt.Sprint(msgAndArgs...)
}

func fail(t TB, what string, msgAndArgs []any) {
	t.Helper()
	t.Fatalf("%s%s", what, message(msgAndArgs))
}

// ObjectsAreEqual reports whether expected and actual are equal: byte
// slices by content, everything else by reflect.DeepEqual.
func ObjectsAreEqual(expected, actual any) bool {
	if expected == nil || actual == nil {
		return expected == actual
	}
	if e, ok := expected.([]byte); ok {
		a, ok := actual.([]byte)
		if !ok {
			return false
		}
		if e == nil || a == nil {
			return e == nil && a == nil
		}
		return bytes.Equal(e, a)
	}
	return reflect.DeepEqual(expected, actual)
}

// Equal checks that expected and actual are equal (ObjectsAreEqual).
func Equal(t TB, expected, actual any, msgAndArgs ...any) {
	t.Helper()
	if !ObjectsAreEqual(expected, actual) {
		fail(t, fmt.Sprintf("Not equal:\nexpected: %#v\nactual  : %#v", expected, actual), msgAndArgs)
	}
}

// Equalf is Equal with a format.
func Equalf(t TB, expected, actual any, format string, args ...any) {
	t.Helper()
	Equal(t, expected, actual, append([]any{format}, args...)...)
}

// NotEqual checks that expected and actual differ.
func NotEqual(t TB, expected, actual any, msgAndArgs ...any) {
	t.Helper()
	if ObjectsAreEqual(expected, actual) {
		fail(t, fmt.Sprintf("Should not be: %#v", actual), msgAndArgs)
	}
}

// EqualValues checks that expected and actual are equal, or equal once
// actual is converted to expected's type.
func EqualValues(t TB, expected, actual any, msgAndArgs ...any) {
	t.Helper()
	if ObjectsAreEqual(expected, actual) {
		return
	}
	if expected != nil && actual != nil {
		et, av := reflect.TypeOf(expected), reflect.ValueOf(actual)
		if av.Type().ConvertibleTo(et) && reflect.DeepEqual(av.Convert(et).Interface(), expected) {
			return
		}
	}
	fail(t, fmt.Sprintf("Not equal:\nexpected: %#v\nactual  : %#v", expected, actual), msgAndArgs)
}

// Same checks that expected and actual are the same pointer.
func Same(t TB, expected, actual any, msgAndArgs ...any) {
	t.Helper()
	e, a := reflect.ValueOf(expected), reflect.ValueOf(actual)
	if e.Kind() != reflect.Pointer || a.Kind() != reflect.Pointer || e.Type() != a.Type() || e.Pointer() != a.Pointer() {
		fail(t, fmt.Sprintf("Not the same pointer:\nexpected: %p\nactual  : %p", expected, actual), msgAndArgs)
	}
}

// NoError checks that err is nil.
func NoError(t TB, err error, msgAndArgs ...any) {
	t.Helper()
	if err != nil {
		fail(t, fmt.Sprintf("Received unexpected error:\n%+v", err), msgAndArgs)
	}
}

// Error checks that err is not nil.
func Error(t TB, err error, msgAndArgs ...any) {
	t.Helper()
	if err == nil {
		fail(t, "An error is expected but got nil.", msgAndArgs)
	}
}

// ErrorIs checks that errors.Is(err, target).
func ErrorIs(t TB, err, target error, msgAndArgs ...any) {
	t.Helper()
	if !errors.Is(err, target) {
		fail(t, fmt.Sprintf("Target error should be in err chain:\nexpected: %v\nin chain: %v", target, err), msgAndArgs)
	}
}

// NotErrorIs checks that !errors.Is(err, target).
func NotErrorIs(t TB, err, target error, msgAndArgs ...any) {
	t.Helper()
	if errors.Is(err, target) {
		fail(t, fmt.Sprintf("Target error should not be in err chain:\nfound: %v\nin chain: %v", target, err), msgAndArgs)
	}
}

// ErrorAs checks that errors.As(err, target).
func ErrorAs(t TB, err error, target any, msgAndArgs ...any) {
	t.Helper()
	if !errors.As(err, target) {
		fail(t, fmt.Sprintf("Should be in error chain:\nexpected: %T\nin chain: %v", target, err), msgAndArgs)
	}
}

// ErrorContains checks that err is not nil and its message contains s.
func ErrorContains(t TB, err error, s string, msgAndArgs ...any) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), s) {
		fail(t, fmt.Sprintf("Error %v does not contain %q", err, s), msgAndArgs)
	}
}

// True checks that v is true.
func True(t TB, v bool, msgAndArgs ...any) {
	t.Helper()
	if !v {
		fail(t, "Should be true", msgAndArgs)
	}
}

// Truef is True with a format.
func Truef(t TB, v bool, format string, args ...any) {
	t.Helper()
	True(t, v, append([]any{format}, args...)...)
}

// False checks that v is false.
func False(t TB, v bool, msgAndArgs ...any) {
	t.Helper()
	if v {
		fail(t, "Should be false", msgAndArgs)
	}
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Chan, reflect.Func, reflect.Interface, reflect.Map, reflect.Pointer, reflect.Slice, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// Nil checks that v is nil.
func Nil(t TB, v any, msgAndArgs ...any) {
	t.Helper()
	if !isNil(v) {
		fail(t, fmt.Sprintf("Expected nil, but got: %#v", v), msgAndArgs)
	}
}

// NotNil checks that v is not nil.
func NotNil(t TB, v any, msgAndArgs ...any) {
	t.Helper()
	if isNil(v) {
		fail(t, "Expected value not to be nil.", msgAndArgs)
	}
}

// isEmpty reports nil, a zero value, an empty container or a pointer to
// an empty value.
func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Chan, reflect.Map, reflect.Slice, reflect.Array, reflect.String:
		return rv.Len() == 0
	case reflect.Pointer:
		if rv.IsNil() {
			return true
		}
		return isEmpty(rv.Elem().Interface())
	}
	return rv.IsZero()
}

// Empty checks that v is empty: nil, zero, or of length 0.
func Empty(t TB, v any, msgAndArgs ...any) {
	t.Helper()
	if !isEmpty(v) {
		fail(t, fmt.Sprintf("Should be empty, but was %#v", v), msgAndArgs)
	}
}

// NotEmpty checks that v is not empty.
func NotEmpty(t TB, v any, msgAndArgs ...any) {
	t.Helper()
	if isEmpty(v) {
		fail(t, fmt.Sprintf("Should NOT be empty, but was %#v", v), msgAndArgs)
	}
}

// Zero checks that v is its type's zero value.
func Zero(t TB, v any, msgAndArgs ...any) {
	t.Helper()
	if v != nil && !reflect.ValueOf(v).IsZero() {
		fail(t, fmt.Sprintf("Should be zero, but was %#v", v), msgAndArgs)
	}
}

// Len checks that v (a string, slice, array, map or channel) has n
// elements.
func Len(t TB, v any, n int, msgAndArgs ...any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Chan, reflect.Map, reflect.Slice, reflect.Array, reflect.String:
		if rv.Len() != n {
			fail(t, fmt.Sprintf("%#v should have %d item(s), but has %d", v, n, rv.Len()), msgAndArgs)
		}
	default:
		fail(t, fmt.Sprintf("%#v has no length", v), msgAndArgs)
	}
}

// Contains checks that s (a string, slice, array or map) contains elem
// (a substring, an element, a key).
func Contains(t TB, s, elem any, msgAndArgs ...any) {
	t.Helper()
	if !contains(s, elem) {
		fail(t, fmt.Sprintf("%#v does not contain %#v", s, elem), msgAndArgs)
	}
}

// NotContains checks that s does not contain elem.
func NotContains(t TB, s, elem any, msgAndArgs ...any) {
	t.Helper()
	if contains(s, elem) {
		fail(t, fmt.Sprintf("%#v should not contain %#v", s, elem), msgAndArgs)
	}
}

func contains(s, elem any) bool {
	rv := reflect.ValueOf(s)
	switch rv.Kind() {
	case reflect.String:
		e, ok := elem.(string)
		return ok && strings.Contains(rv.String(), e)
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			if ObjectsAreEqual(rv.Index(i).Interface(), elem) {
				return true
			}
		}
	case reflect.Map:
		for _, k := range rv.MapKeys() {
			if ObjectsAreEqual(k.Interface(), elem) {
				return true
			}
		}
	}
	return false
}

// ElementsMatch checks that two slices hold the same elements, in any
// order.
func ElementsMatch(t TB, listA, listB any, msgAndArgs ...any) {
	t.Helper()
	a, b := reflect.ValueOf(listA), reflect.ValueOf(listB)
	if a.Len() != b.Len() {
		fail(t, fmt.Sprintf("Lengths differ:\n%#v\n%#v", listA, listB), msgAndArgs)
		return
	}
	used := make([]bool, b.Len())
outer:
	for i := range a.Len() {
		for j := range b.Len() {
			if !used[j] && ObjectsAreEqual(a.Index(i).Interface(), b.Index(j).Interface()) {
				used[j] = true
				continue outer
			}
		}
		fail(t, fmt.Sprintf("Elements differ:\n%#v\n%#v", listA, listB), msgAndArgs)
		return
	}
}

// compare orders two values of one ordered kind (integers, floats,
// strings, time.Time): -1, 0 or 1, and false when they cannot be ordered.
func compare(x, y any) (int, bool) {
	if tx, ok := x.(time.Time); ok {
		ty, ok := y.(time.Time)
		return tx.Compare(ty), ok
	}
	a, b := reflect.ValueOf(x), reflect.ValueOf(y)
	if a.Kind() != b.Kind() {
		return 0, false
	}
	switch a.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return cmp3(a.Int(), b.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return cmp3(a.Uint(), b.Uint()), true
	case reflect.Float32, reflect.Float64:
		return cmp3(a.Float(), b.Float()), true
	case reflect.String:
		return cmp3(a.String(), b.String()), true
	}
	return 0, false
}

func cmp3[T int64 | uint64 | float64 | string](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func ordered(t TB, x, y any, ok func(int) bool, rel string, msgAndArgs []any) {
	t.Helper()
	c, comparable := compare(x, y)
	if !comparable {
		fail(t, fmt.Sprintf("Cannot compare %#v and %#v", x, y), msgAndArgs)
		return
	}
	if !ok(c) {
		fail(t, fmt.Sprintf("\"%v\" is not %s \"%v\"", x, rel, y), msgAndArgs)
	}
}

// Greater checks that x > y.
func Greater(t TB, x, y any, msgAndArgs ...any) {
	t.Helper()
	ordered(t, x, y, func(c int) bool { return c > 0 }, "greater than", msgAndArgs)
}

// GreaterOrEqual checks that x >= y.
func GreaterOrEqual(t TB, x, y any, msgAndArgs ...any) {
	t.Helper()
	ordered(t, x, y, func(c int) bool { return c >= 0 }, "greater than or equal to", msgAndArgs)
}

// Less checks that x < y.
func Less(t TB, x, y any, msgAndArgs ...any) {
	t.Helper()
	ordered(t, x, y, func(c int) bool { return c < 0 }, "less than", msgAndArgs)
}

// LessOrEqual checks that x <= y.
func LessOrEqual(t TB, x, y any, msgAndArgs ...any) {
	t.Helper()
	ordered(t, x, y, func(c int) bool { return c <= 0 }, "less than or equal to", msgAndArgs)
}

// Eventually checks that condition returns true within waitFor, trying
// every tick.
func Eventually(t TB, condition func() bool, waitFor, tick time.Duration, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if condition() {
			return
		}
		if time.Now().After(deadline) {
			fail(t, "Condition never satisfied", msgAndArgs)
			return
		}
		time.Sleep(tick)
	}
}
