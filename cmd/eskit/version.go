package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...";
// otherwise the module version from the build info is used.
var version = ""

func runVersion(_ context.Context, c *cli, args []string) error {
	fs := c.flagSet("version", "[flags]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	if *asJSON {
		return jsonLine(c.stdout, map[string]string{"version": v, "go": runtime.Version()})
	}
	fmt.Fprintf(c.stdout, "eskit %s (%s)\n", v, runtime.Version())
	return nil
}
