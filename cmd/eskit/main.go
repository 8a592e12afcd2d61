// Command eskit is the operator CLI of eskit: migrations, streams, the live
// feed, the relay, projections, sagas and benchmarks. Run `eskit help` for
// the list of commands and `eskit <command> -h` for each command's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, cli *cli, args []string) error
}

// cli carries the output streams shared by all commands.
type cli struct {
	stdout, stderr io.Writer
	commands       map[string]command
}

// usageError is a bad invocation: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

func commands() []command {
	return []command{
		{"migrate", "apply the PostgreSQL schema migrations, or show their status", runMigrate},
		{"streams", "list streams by prefix, or show one stream's events", runStreams},
		{"import", "bulk-load new streams from JSON lines (as `streams show -json` prints them), with progress", runImport},
		{"tail", "follow the global feed live", runTail},
		{"projections", "projection status and lag; rebuild; parked records: list, retry, skip", runProjections},
		{"sagas", "saga (process manager) instances: list, counts by state, show one; parked instances: retry, skip", runSagas},
		{"relay", "run the outbox relay: publish the feed to NATS JetStream (one of several leads); relay status: its checkpoint, lag and leader", runRelay},
		{"console", "the operator web console: streams, live feed, projections, relays, sagas, health", runConsole},
		{"bench", "measure eskit next to the raw infrastructure (PostgreSQL, JetStream, Redis, HTTP)", runBench},
		{"version", "print the eskit version", runVersion},
	}
}

// run executes the CLI and returns the process exit code: 0 on success, 1
// when the command failed, 2 on a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, commands: map[string]command{}}
	for _, cmd := range commands() {
		c.commands[cmd.name] = cmd
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		c.usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := c.commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "eskit: unknown command %q\n\n", args[0])
		c.usage(stderr)
		return 2
	}
	err := cmd.run(ctx, c, args[1:])
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "eskit %s: %v\n", cmd.name, err)
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0
	default:
		fmt.Fprintf(stderr, "eskit %s: %v\n", cmd.name, err)
		return 1
	}
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "eskit: the operator CLI of the eskit event-sourcing framework")
	fmt.Fprintln(w, "\nUsage: eskit <command> [flags] [arguments]\n\nCommands:")
	names := make([]string, 0, len(c.commands))
	for n := range c.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, c.commands[n].summary)
	}
	fmt.Fprintln(w, "\nEnvironment: ESKIT_POSTGRES_URL, ESKIT_NATS_URL, ESKIT_REDIS_URL (flags override them).")
	fmt.Fprintln(w, "There is no default server: a command needs the URL of each service it uses.")
	fmt.Fprintln(w, "Flags may come before or after a command's arguments; `--` ends them.")
	fmt.Fprintln(w, "Run `eskit <command> -h` for a command's flags.")
}

// flagSet returns a flag set for a subcommand whose errors and help go to
// the CLI's stderr and come back as errors.
func (c *cli) flagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("eskit "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: eskit %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error()}
	}
	return nil
}
