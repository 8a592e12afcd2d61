// Package keys is the one key-prefix convention of eskit's Redis parts
// (projection runners and readers, the Redis lease store): a deployment
// names itself with one word, and its keys start with that word and a
// separator.
package keys

import (
	"unicode"
	"unicode/utf8"
)

// Separator separates a key prefix from the keys under it.
const Separator = ":"

// Prefix returns the key prefix that prefix names: the word followed by
// Separator ("bank" → "bank:"), or prefix itself when it is empty or
// already ends with a separator, that is anything but a letter or a digit
// ("bank:" and "app/" stay as they are), so that both spellings name the
// same keys.
func Prefix(prefix string) string {
	last, _ := utf8.DecodeLastRuneInString(prefix)
	if prefix == "" || !unicode.IsLetter(last) && !unicode.IsDigit(last) {
		return prefix
	}
	return prefix + Separator
}
