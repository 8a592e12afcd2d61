package commandbus

import (
	"context"

	"github.com/eskit/eskit/aggregate"
)

// HandleWith returns a handler, for Register, that handles every command of
// type C on an aggregate repository. route maps the bus's command to the
// stream it is for and the decider's command; an error from route is the
// outcome, and the repository is not called.
//
// The handler passes on to the repository what the bus knows about the
// command: its ID (CommandIDOf: its own, or the one the context carries) as
// aggregate.WithCommandID, so that the events' IDs derive from it and a
// repeated command is answered with its first result, and the correlation
// and causation IDs of the context (MetadataFrom) as aggregate.WithMetadata.
// The repository's result becomes the bus's: stream, version, position and
// Duplicate.
//
// HandleWith returns nil, which Register refuses, when repo or route is nil.
func HandleWith[C, S, DC, E any](repo *aggregate.Repository[S, DC, E], route func(ctx context.Context, cmd C) (streamID string, dc DC, err error)) func(ctx context.Context, cmd C) (Result, error) {
	if repo == nil || route == nil {
		return nil
	}
	return func(ctx context.Context, cmd C) (Result, error) {
		stream, dc, err := route(ctx, cmd)
		if err != nil {
			return Result{}, err
		}
		opts := make([]aggregate.HandleOption, 0, 2)
		if id, ok := CommandIDOf(ctx, cmd); ok {
			opts = append(opts, aggregate.WithCommandID(id))
		}
		if md := MetadataFrom(ctx); md != nil {
			opts = append(opts, aggregate.WithMetadata(md))
		}
		res, err := repo.Handle(ctx, stream, dc, opts...)
		if err != nil {
			return Result{}, err
		}
		return Result{StreamID: res.StreamID, Version: res.Version, Position: res.Position, Duplicate: res.Duplicate}, nil
	}
}
