package pgstore

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/eskit/eskit/eventstore"
)

// decodeMetadata decodes a stored metadata column: the JSON object of
// string values that encodeMetadata wrote. Objects of plain strings (no
// escapes, valid UTF-8), which is what stores almost always hold, are read
// by a small scanner without reflection; anything else goes to
// encoding/json, whose result it matches.
func decodeMetadata(b []byte) (eventstore.Metadata, error) {
	if md, ok := scanFlatObject(b); ok {
		return md, nil
	}
	var md eventstore.Metadata
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, err
	}
	return md, nil
}

// scanFlatObject reads {"k":"v",...} with plain strings; ok is false for
// anything else (escapes, other value types, invalid JSON), left to
// encoding/json.
func scanFlatObject(b []byte) (md eventstore.Metadata, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	md = eventstore.Metadata{}
	if i < len(b) && b[i] == '}' {
		return md, skipSpace(b, i+1) == len(b)
	}
	for {
		k, j, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		v, j, ok := plainString(b, skipSpace(b, i+1))
		if !ok {
			return nil, false
		}
		md[k] = v
		i = skipSpace(b, j)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return md, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

// plainString reads a JSON string without escapes or control characters
// starting at b[i] (its opening quote) and returns it and the index after
// its closing quote.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				return "", 0, false
			}
			return string(s), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
