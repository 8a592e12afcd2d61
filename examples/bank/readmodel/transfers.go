package readmodel

import (
	"context"
	"fmt"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/projection"
)

// applyTransfer keeps one hash per transfer. The requested event carries
// the whole transfer; the later ones move its status.
func (o options) applyTransfer(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev domain.TransferEvent) error {
	id, err := transferID(rec)
	if err != nil {
		return err
	}
	key := b.Key("transfer", id.String())
	fields := []any{"version", i64(rec.Version), "updated_at", at(rec), "position", rec.Position.String()}
	var status domain.TransferStatus
	reason := ""
	switch e := ev.(type) {
	case domain.TransferRequested:
		status = domain.StatusRequested
		fields = append(fields, "id", id.String(), "from", e.From.String(), "to", e.To.String(),
			"amount", i64(e.Amount), "currency", e.Currency, "principal", e.Principal, "requested_at", at(rec))
	case domain.TransferRejected:
		status, reason = domain.StatusRejected, e.Reason
	case domain.SourceDebited:
		status = domain.StatusDebited
	case domain.TransferCompleted:
		status = domain.StatusCompleted
	case domain.CreditFailed:
		status, reason = domain.StatusCreditFailed, e.Reason
	case domain.TransferRefunded:
		status = domain.StatusRefunded
	default:
		return projection.Permanent(fmt.Errorf("readmodel: unknown transfer event %T", ev))
	}
	fields = append(fields, "status", string(status))
	if reason != "" {
		fields = append(fields, "reason", reason)
	}
	b.Pipe().HSet(ctx, key, fields...)
	if status.Final() && o.onTransferFinished != nil {
		// The transfer's other fields were committed by earlier batches,
		// or are in this one: read them once it has committed.
		reader, fn := b.Reader(), o.onTransferFinished
		b.AfterCommit(func(ctx context.Context) {
			vals, err := reader.HGetAll(ctx, key).Result()
			if err != nil {
				return
			}
			if t, err := transferFromHash(vals); err == nil {
				fn(ctx, t)
			}
		})
	}
	return nil
}
