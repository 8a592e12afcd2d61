package main

import (
	"flag"
	"strings"
)

// parseArgs parses a subcommand's arguments with fs and returns its
// positional arguments in order. Flags may come before, between and after
// them (`rebuild -prefix p: stock` and `rebuild stock -prefix p:` are the
// same); `--` ends the flags, so that everything after it is positional
// even when it starts with a dash. flag.FlagSet.Parse stops at the first
// positional argument: parseArgs collects it and parses the rest again,
// until the arguments are used up or a `--` was read.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if endedFlags(fs, args[:len(args)-len(rest)]) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// endedFlags reports whether the arguments fs.Parse consumed end with the
// `--` that ends flags (rather than with a flag's value that happens to
// be "--", as in `-prefix --`). It walks the consumed arguments by the
// flag package's rules: "-name=value" and boolean flags take one argument,
// other flags two.
func endedFlags(fs *flag.FlagSet, consumed []string) bool {
	for i := 0; i < len(consumed); i++ {
		a := consumed[i]
		if a == "--" {
			return true
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // Parse succeeded, so there is none of these
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		i++ // the flag's value
	}
	return false
}

// noArgs parses the arguments of a subcommand that takes no positional
// argument: one is a usage error.
func noArgs(fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}
