package projection

import (
	"errors"
	"fmt"
	"strings"

	keyconv "github.com/eskit/eskit/internal/keys"
)

// MaxNameLen is the longest projection name.
const MaxNameLen = 100

// ErrInvalidName reports a projection name or key prefix outside the
// documented alphabet.
var ErrInvalidName = errors.New("projection: invalid name")

// ValidateName checks a projection name: 1 to MaxNameLen bytes of ASCII
// letters, digits, '.', '_' and '-', starting with a letter or a digit.
//
// The alphabet keeps every projection's keys apart from every other's: a
// projection's keys all start with "<prefix>{<name>}" or
// "<prefix>{<name>:<partition>}", and since names contain neither ':' nor
// braces, no name's keys (read model or bookkeeping) can be another's.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q is longer than %d bytes", ErrInvalidName, name[:20]+"...", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w: %q: byte %q not allowed (letters, digits, '.', '_', '-'; first a letter or digit)", ErrInvalidName, name, c)
		}
	}
	return nil
}

// ValidatePrefix checks a key prefix: any bytes but braces (which would
// change the keys' Redis Cluster hash slots) and control characters.
func ValidatePrefix(prefix string) error {
	if i := strings.IndexFunc(prefix, func(r rune) bool { return r == '{' || r == '}' || r < ' ' || r == 0x7f }); i >= 0 {
		return fmt.Errorf("%w: key prefix %q: braces and control characters are not allowed", ErrInvalidName, prefix)
	}
	return nil
}

// KeySeparator separates a key prefix from the keys under it.
const KeySeparator = keyconv.Separator

// KeyPrefix returns the key prefix that runners and readers given prefix
// use (WithPrefix, NewReader): the deployment's word followed by
// KeySeparator ("bank" → "bank:"), or prefix itself when it is empty or
// already ends with a separator, that is anything but a letter or a digit
// ("bank:" and "app/" stay as they are), so that both spellings name the
// same keys. The Redis lease store (lease/redislease) follows the same
// convention.
func KeyPrefix(prefix string) string { return keyconv.Prefix(prefix) }
