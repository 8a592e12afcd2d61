package commandbus

import (
	"errors"
	"fmt"
)

// Sentinel errors. The typed errors below match the corresponding sentinel
// with errors.Is.
var (
	// ErrNilCommand: Dispatch was given a nil command.
	ErrNilCommand = errors.New("commandbus: nil command")
	// ErrUnknownCommand: no handler is registered for the command's type.
	ErrUnknownCommand = errors.New("commandbus: unknown command")
	// ErrDuplicateHandler: a handler is already registered for the type.
	ErrDuplicateHandler = errors.New("commandbus: handler already registered")
	// ErrValidation: the command failed its Validate method.
	ErrValidation = errors.New("commandbus: invalid command")
	// ErrPanic: the handler or a middleware panicked.
	ErrPanic = errors.New("commandbus: handler panicked")
)

// UnknownCommandError reports a command whose type has no handler.
type UnknownCommandError struct {
	// Command is the command's Go type.
	Command string
}

func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("commandbus: no handler registered for %s", e.Command)
}

// Is makes errors.Is(err, ErrUnknownCommand) true.
func (e *UnknownCommandError) Is(target error) bool { return target == ErrUnknownCommand }

// ValidationError reports a command rejected by its Validate method.
type ValidationError struct {
	// Command is the command's Go type.
	Command string
	// Err is what Validate returned.
	Err error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("commandbus: invalid %s: %v", e.Command, e.Err)
}

// Unwrap returns the error Validate returned.
func (e *ValidationError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrValidation) true.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

// PanicError reports a panic in a handler or middleware, recovered by the
// bus.
type PanicError struct {
	// Command is the command's Go type.
	Command string
	// Value is the value passed to panic.
	Value any
	// Stack is the panicking goroutine's stack trace.
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("commandbus: handler for %s panicked: %v", e.Command, e.Value)
}

// Is makes errors.Is(err, ErrPanic) true.
func (e *PanicError) Is(target error) bool { return target == ErrPanic }
