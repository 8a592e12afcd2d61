package readmodel

import (
	"context"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/projection"
)

// Fields of the money hash: "<currency>:<field>".
const (
	fieldHeld      = "held"
	fieldInFlight  = "in_flight"
	fieldDeposited = "deposited"
	fieldWithdrawn = "withdrawn"
)

// moneyLua adds deltas to the money hash (KEYS[2]) under the currency of
// the account whose currency key is KEYS[1]. Money events carry no
// currency, and the account's may have been set earlier in the same
// batch, where a read outside the transaction cannot see it: the script
// runs inside the batch's MULTI/EXEC, after the writes queued before it.
// ARGV holds pairs of field and delta.
const moneyLua = `
local c = redis.call('GET', KEYS[1])
if not c then
  return redis.error_reply('bank.totals: no currency for ' .. KEYS[1])
end
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], c .. ':' .. ARGV[i], ARGV[i + 1])
end
return 1
`

// applyTotals keeps the bank's totals: accounts and transfers counted by
// status, and per currency the money held (the sum of the balances), in
// flight (debited from a source, not yet credited or refunded), deposited
// and withdrawn. Held plus in flight always equals deposited minus
// withdrawn: transfers move money, they never make or lose any.
func applyTotals(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev any) error {
	p := b.Pipe()
	accounts, transfers := b.Key("accounts"), b.Key("transfers")
	money := func(id uuid.UUID, deltas ...any) {
		p.Eval(ctx, moneyLua, []string{b.Key("currency", id.String()), b.Key("money")}, deltas...)
	}
	move := func(key, from, to string) {
		if from != "" {
			p.HIncrBy(ctx, key, from, -1)
		}
		p.HIncrBy(ctx, key, to, 1)
	}
	switch e := ev.(type) {
	case domain.AccountEvent:
		id, err := accountID(rec)
		if err != nil {
			return err
		}
		switch e := e.(type) {
		case domain.AccountOpened:
			p.Set(ctx, b.Key("currency", id.String()), e.Currency, 0)
			p.HIncrBy(ctx, accounts, "total", 1)
			move(accounts, "", string(domain.StatusOpen))
			money(id, fieldHeld, 0) // lists the currency from the first account on
		case domain.AccountFrozen:
			move(accounts, string(domain.StatusOpen), string(domain.StatusFrozen))
		case domain.AccountUnfrozen:
			move(accounts, string(domain.StatusFrozen), string(domain.StatusOpen))
		case domain.AccountClosed:
			move(accounts, string(domain.StatusOpen), string(domain.StatusClosed))
		case domain.Deposited:
			if e.TransferID == uuid.Nil {
				money(id, fieldHeld, e.Amount, fieldDeposited, e.Amount)
			} else {
				money(id, fieldHeld, e.Amount, fieldInFlight, -e.Amount)
			}
		case domain.Withdrawn:
			if e.TransferID == uuid.Nil {
				money(id, fieldHeld, -e.Amount, fieldWithdrawn, e.Amount)
			} else {
				money(id, fieldHeld, -e.Amount, fieldInFlight, e.Amount)
			}
		}
	case domain.TransferEvent:
		switch ev.(type) {
		case domain.TransferRequested:
			p.HIncrBy(ctx, transfers, "total", 1)
			move(transfers, "", string(domain.StatusRequested))
		case domain.TransferRejected:
			move(transfers, string(domain.StatusRequested), string(domain.StatusRejected))
		case domain.SourceDebited:
			move(transfers, string(domain.StatusRequested), string(domain.StatusDebited))
		case domain.TransferCompleted:
			move(transfers, string(domain.StatusDebited), string(domain.StatusCompleted))
		case domain.CreditFailed:
			move(transfers, string(domain.StatusDebited), string(domain.StatusCreditFailed))
		case domain.TransferRefunded:
			move(transfers, string(domain.StatusCreditFailed), string(domain.StatusRefunded))
		}
	}
	return nil
}
