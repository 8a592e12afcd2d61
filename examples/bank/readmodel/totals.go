package readmodel

import (
	"context"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/projection"
)

// Fields of the money hash. Each money total of a currency is an exact
// integer of any size, kept in two fields that never overflow:
//
//	"<currency>:<field>"      its low part, in [0, moneyUnit)
//	"<currency>:<field>:hi"   its high part, in units of moneyUnit
//
// The total is high·moneyUnit + low (Stats computes it with math/big). The
// high part grows by at most a few units per event, so no history an int64
// can count overflows it.
const (
	fieldHeld      = "held"
	fieldInFlight  = "in_flight"
	fieldDeposited = "deposited"
	fieldWithdrawn = "withdrawn"
	highSuffix     = ":hi"
)

// moneyUnit is the unit of the high parts, 10^15 (moneyUnitDec in
// decimal). Every number moneyLua handles is then below 2·10^15 < 2^53 in
// magnitude, so Lua's numbers, which are doubles, hold each exactly.
const (
	moneyUnit    int64 = 1_000_000_000_000_000
	moneyUnitDec       = "1000000000000000"
)

// moneyLua adds deltas to the money hash (KEYS[2]) under the currency of
// the account whose currency key is KEYS[1]. Money events carry no
// currency, and the account's may have been set earlier in the same
// batch, where a read outside the transaction cannot see it: the script
// runs inside the batch's MULTI/EXEC, after the writes queued before it.
//
// ARGV holds triples of field, high delta and low delta, decimal integers
// (see change): the low delta is below moneyUnit in magnitude. The script
// adds both, then carries the low part back into [0, moneyUnit). It does
// no arithmetic of its own and never turns a number into a string: every
// HINCRBY argument is one of ARGV or a literal.
const moneyLua = `
local c = redis.call('GET', KEYS[1])
if not c then
  return redis.error_reply('readmodel: no currency for ' .. KEYS[1])
end
for i = 1, #ARGV, 3 do
  local low = c .. ':' .. ARGV[i]
  local high = low .. '` + highSuffix + `'
  if ARGV[i + 1] ~= '0' then
    redis.call('HINCRBY', KEYS[2], high, ARGV[i + 1])
  end
  local n = redis.call('HINCRBY', KEYS[2], low, ARGV[i + 2])
  if n >= ` + moneyUnitDec + ` then
    redis.call('HINCRBY', KEYS[2], low, '-` + moneyUnitDec + `')
    redis.call('HINCRBY', KEYS[2], high, '1')
  elseif n < 0 then
    redis.call('HINCRBY', KEYS[2], low, '` + moneyUnitDec + `')
    redis.call('HINCRBY', KEYS[2], high, '-1')
  end
end
return 1
`

// change is a delta of one money total, split as hi·moneyUnit + lo. Go's
// division truncates, so hi and lo have the delta's sign and |lo| <
// moneyUnit, for any int64 delta.
type change struct {
	field  string
	hi, lo int64
}

// plus is the change of a total by +n; minus by -n (for any int64 n,
// math.MinInt64 included: the parts are negated, never n).
func plus(field string, n int64) change {
	return change{field: field, hi: n / moneyUnit, lo: n % moneyUnit}
}

func minus(field string, n int64) change {
	c := plus(field, n)
	c.hi, c.lo = -c.hi, -c.lo
	return c
}

// moneyArgs returns the ARGV of moneyLua for the changes.
func moneyArgs(changes []change) []any {
	args := make([]any, 0, 3*len(changes))
	for _, c := range changes {
		args = append(args, c.field, i64(c.hi), i64(c.lo))
	}
	return args
}

// moneySums are exact money totals: per currency, per field.
type moneySums map[string]map[string]*big.Int

// add adds a partition's money hash.
func (s moneySums) add(vals map[string]string) error {
	unit := big.NewInt(moneyUnit)
	for f, v := range vals {
		cur, rest, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		field, high := strings.CutSuffix(rest, highSuffix)
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("readmodel: totals field %s: %w", f, err)
		}
		x := big.NewInt(n)
		if high {
			x.Mul(x, unit)
		}
		fields := s[cur]
		if fields == nil {
			fields = map[string]*big.Int{}
			s[cur] = fields
		}
		if fields[field] == nil {
			fields[field] = new(big.Int)
		}
		fields[field].Add(fields[field], x)
	}
	return nil
}

// money returns the totals of each currency.
func (s moneySums) money() map[string]Money {
	out := make(map[string]Money, len(s))
	for cur, fields := range s {
		get := func(f string) Amount {
			if n := fields[f]; n != nil {
				return amountOf(n)
			}
			return Amount{}
		}
		out[cur] = Money{Held: get(fieldHeld), InFlight: get(fieldInFlight), Deposited: get(fieldDeposited), Withdrawn: get(fieldWithdrawn)}
	}
	return out
}

// applyTotals keeps the bank's totals: accounts and transfers counted by
// status, and per currency the money held (the sum of the balances), in
// flight (debited from a source, not yet credited or refunded), deposited
// and withdrawn. Held plus in flight always equals deposited minus
// withdrawn: transfers move money, they never make or lose any.
func applyTotals(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev any) error {
	p := b.Pipe()
	count := func(kind, status string, n int64) { p.HIncrBy(ctx, b.Key(kind), status, n) }
	currency := func(id uuid.UUID, cur string) { p.Set(ctx, b.Key("currency", id.String()), cur, 0) }
	money := func(id uuid.UUID, changes ...change) {
		p.Eval(ctx, moneyLua, []string{b.Key("currency", id.String()), b.Key("money")}, moneyArgs(changes)...)
	}
	return totalsOf(rec, ev, count, currency, money)
}

// The kinds of counts of the totals.
const (
	countAccounts  = "accounts"
	countTransfers = "transfers"
)

// totalsOf says what a record changes of the totals, on any target:
// count adds n to a count (of accounts or transfers, by status), currency
// sets an account's currency, and money changes the totals of the
// account's currency (which may have been set by the same batch).
func totalsOf(rec eventstore.Record, ev any, count func(kind, status string, n int64),
	currency func(id uuid.UUID, cur string), money func(id uuid.UUID, changes ...change)) error {
	move := func(kind string, from, to string) {
		if from != "" {
			count(kind, from, -1)
		}
		count(kind, to, 1)
	}
	accounts := func(from, to domain.AccountStatus) { move(countAccounts, string(from), string(to)) }
	transfers := func(from, to domain.TransferStatus) { move(countTransfers, string(from), string(to)) }
	switch e := ev.(type) {
	case domain.AccountEvent:
		id, err := accountID(rec)
		if err != nil {
			return err
		}
		switch e := e.(type) {
		case domain.AccountOpened:
			currency(id, e.Currency)
			count(countAccounts, "total", 1)
			accounts("", domain.StatusOpen)
			money(id, plus(fieldHeld, 0)) // lists the currency from the first account on
		case domain.AccountFrozen:
			accounts(domain.StatusOpen, domain.StatusFrozen)
		case domain.AccountUnfrozen:
			accounts(domain.StatusFrozen, domain.StatusOpen)
		case domain.AccountClosed:
			accounts(domain.StatusOpen, domain.StatusClosed)
		case domain.Deposited:
			if e.TransferID == uuid.Nil {
				money(id, plus(fieldHeld, e.Amount), plus(fieldDeposited, e.Amount))
			} else {
				money(id, plus(fieldHeld, e.Amount), minus(fieldInFlight, e.Amount))
			}
		case domain.Withdrawn:
			if e.TransferID == uuid.Nil {
				money(id, minus(fieldHeld, e.Amount), plus(fieldWithdrawn, e.Amount))
			} else {
				money(id, minus(fieldHeld, e.Amount), plus(fieldInFlight, e.Amount))
			}
		}
	case domain.TransferEvent:
		switch ev.(type) {
		case domain.TransferRequested:
			count(countTransfers, "total", 1)
			transfers("", domain.StatusRequested)
		case domain.TransferRejected:
			transfers(domain.StatusRequested, domain.StatusRejected)
		case domain.SourceDebited:
			transfers(domain.StatusRequested, domain.StatusDebited)
		case domain.TransferCompleted:
			transfers(domain.StatusDebited, domain.StatusCompleted)
		case domain.CreditFailed:
			transfers(domain.StatusDebited, domain.StatusCreditFailed)
		case domain.TransferRefunded:
			transfers(domain.StatusCreditFailed, domain.StatusRefunded)
		}
	}
	return nil
}
