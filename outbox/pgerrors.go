package outbox

import (
	"errors"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// configErrorCodes are the PostgreSQL errors that say the relay's
// configuration is wrong rather than the database unwell: retrying cannot
// fix them, so Run returns them.
var configErrorCodes = map[string]bool{
	pgerrcode.UndefinedTable:                    true, // the checkpoints table: migrations not run in this schema
	pgerrcode.InvalidSchemaName:                 true, // no such schema
	pgerrcode.InsufficientPrivilege:             true, // the role may not use the table
	pgerrcode.InvalidCatalogName:                true, // no such database
	pgerrcode.InvalidPassword:                   true, // the login is refused
	pgerrcode.InvalidAuthorizationSpecification: true,
}

// errNoPrivilege reports a role that may not use the checkpoints table.
var errNoPrivilege = errors.New("the role may not select, insert and update the relay's checkpoints")

// isConfigError reports whether err is a PostgreSQL error no retry can fix
// (see configErrorCodes).
func isConfigError(err error) bool {
	var pe *pgconn.PgError
	return errors.Is(err, errNoPrivilege) || errors.As(err, &pe) && configErrorCodes[pe.Code]
}
