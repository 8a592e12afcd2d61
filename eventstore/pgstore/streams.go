package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StreamInfo describes one stream.
type StreamInfo struct {
	StreamID string
	// Version is the stream's current version (its number of events).
	Version int64
	// LastRecordedAt is when the stream's last event was written.
	LastRecordedAt time.Time
}

// ListStreams returns up to limit streams whose IDs start with prefix and
// sort (byte-wise) after the given ID, in ID order; pass the last ID of a page
// as after to get the next page. It skips from stream to stream through the
// (stream_id, version) index, so its cost follows the number of streams
// returned, not the number of events.
func (s *Store) ListStreams(ctx context.Context, prefix, after string, limit int) ([]StreamInfo, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	start := max(after, prefix)
	inclusive := after < prefix // the prefix itself may be a stream ID
	t := quoteIdent(s.schema) + ".events"
	sql := `WITH RECURSIVE ids(id) AS (
	    SELECT min(stream_id) FROM ` + t + ` WHERE stream_id > $1 OR ($2 AND stream_id = $1)
	  UNION ALL
	    SELECT (SELECT min(e.stream_id) FROM ` + t + ` e WHERE e.stream_id > ids.id)
	    FROM ids WHERE ids.id IS NOT NULL AND starts_with(ids.id, $3)
	)
	SELECT ids.id, last.version, last.recorded_at
	FROM ids CROSS JOIN LATERAL (
	    SELECT e.version, e.recorded_at FROM ` + t + ` e
	    WHERE e.stream_id = ids.id ORDER BY e.version DESC LIMIT 1) AS last
	WHERE ids.id IS NOT NULL AND starts_with(ids.id, $3)
	LIMIT $4`
	rows, err := s.pool.Query(ctx, sql, start, inclusive, prefix, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list streams: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StreamInfo, error) {
		var si StreamInfo
		err := row.Scan(&si.StreamID, &si.Version, &si.LastRecordedAt)
		si.LastRecordedAt = si.LastRecordedAt.UTC()
		return si, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: list streams: %w", err)
	}
	return out, nil
}
