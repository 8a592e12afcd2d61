package main

import (
	"context"
	"fmt"
	"time"

	"github.com/eskit/eskit/eventstore/pgstore"
)

func runMigrate(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("migrate", "[apply|status] [flags]")
	var pg pgFlags
	pg.register(fs)
	asJSON := fs.Bool("json", false, "print JSON lines")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	action := "apply"
	switch {
	case len(pos) > 1:
		return usagef("unexpected argument %q (want one of apply or status)", pos[1])
	case len(pos) == 1 && pos[0] != "apply" && pos[0] != "status":
		return usagef("unexpected argument %q (want apply or status)", pos[0])
	case len(pos) == 1:
		action = pos[0]
	}
	pool, err := pg.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if action == "apply" {
		if err := pgstore.Migrate(ctx, pool, pg.schema); err != nil {
			return err
		}
	}
	st, err := pgstore.MigrationStatus(ctx, pool, pg.schema)
	if err != nil {
		return err
	}
	type row struct {
		Version   int        `json:"version"`
		Name      string     `json:"name"`
		State     string     `json:"state"`
		AppliedAt *time.Time `json:"applied_at,omitempty"`
	}
	var rows []row
	for _, m := range st.Applied {
		at := m.AppliedAt
		rows = append(rows, row{m.Version, m.Name, "applied", &at})
	}
	for _, m := range st.Pending {
		rows = append(rows, row{m.Version, m.Name, "pending", nil})
	}
	if *asJSON {
		for _, r := range rows {
			if err := jsonLine(c.stdout, r); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(c.stdout, "VERSION", "NAME", "STATE", "APPLIED AT")
	for _, r := range rows {
		at := ""
		if r.AppliedAt != nil {
			at = r.AppliedAt.UTC().Format(time.RFC3339)
		}
		t.row(r.Version, r.Name, r.State, at)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if st.UpToDate() {
		fmt.Fprintf(c.stdout, "schema %q is up to date\n", pg.schema)
	} else {
		fmt.Fprintf(c.stdout, "schema %q has %d pending migration(s): run `eskit migrate apply`\n", pg.schema, len(st.Pending))
	}
	return nil
}
