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
	status, reason, ok := transferMove(ev)
	if !ok {
		return projection.Permanent(fmt.Errorf("readmodel: unknown transfer event %T", ev))
	}
	if e, ok := ev.(domain.TransferRequested); ok {
		fields = append(fields, "id", id.String(), "from", e.From.String(), "to", e.To.String(),
			"amount", i64(e.Amount), "currency", e.Currency, "principal", e.Principal, "requested_at", at(rec))
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

// transferMove returns the status a transfer event moves its transfer to,
// and the reason it gives (""); ok is false for an event it does not know.
func transferMove(ev domain.TransferEvent) (status domain.TransferStatus, reason string, ok bool) {
	switch e := ev.(type) {
	case domain.TransferRequested:
		return domain.StatusRequested, "", true
	case domain.TransferRejected:
		return domain.StatusRejected, e.Reason, true
	case domain.SourceDebited:
		return domain.StatusDebited, "", true
	case domain.TransferCompleted:
		return domain.StatusCompleted, "", true
	case domain.CreditFailed:
		return domain.StatusCreditFailed, e.Reason, true
	case domain.TransferRefunded:
		return domain.StatusRefunded, "", true
	}
	return "", "", false
}
