package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/console"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/outbox"

	"github.com/google/uuid"
)

// The operator console on the bank's real-services deployment: its
// streams and events, the four projections with their partitions, the
// relay's leader and the transfer saga's instances, with the read models
// in Redis and in PostgreSQL.
func TestConsoleOnTheBank(t *testing.T) {
	for _, rm := range readModelKinds {
		t.Run(rm, func(t *testing.T) {
			svc := realServicesWith(t, rm)
			a, srv := startApp(t, svc, appOptions{})
			c := client{t: t, base: srv.URL, svc: svc}
			accounts, transfers := bankScript(t, c)
			sagas, ok := svc.sagas.(*pgstore.SagaStore)
			require.True(t, ok)
			const token = "bank-console-token-0123456789"
			con, err := console.New(console.Config{
				Store: svc.store.(*pgstore.Store), Projections: a.reader, Sagas: sagas, Token: token, Logger: testLogger(t),
				Relays: []string{relayName},
				RelayStatus: func(ctx context.Context, name string) (outbox.RelayStatus, error) {
					return outbox.ReadStatus(ctx, svc.pool, svc.schema, name)
				},
				Health: []console.Check{{Name: "postgres", Check: svc.pool.Ping}},
			})
			require.NoError(t, err)
			t.Cleanup(con.Close)
			cs := httptest.NewServer(con.Handler())
			t.Cleanup(cs.Close)
			get := func(path string) string {
				t.Helper()
				req, err := http.NewRequest(http.MethodGet, cs.URL+path, nil)
				require.NoError(t, err)
				req.Header.Set("Authorization", "Bearer "+token)
				res, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, res.StatusCode, "%s: %s", path, b)
				return string(b)
			}
			pos := testsvc.SettledHead(t, svc.store)
			for _, name := range readmodel.Names {
				require.NoError(t, a.reader.WaitFor(t.Context(), name, pos))
			}
			overview := get("/")
			for _, name := range readmodel.Names {
				require.Contains(t, overview, name)
			}
			require.Contains(t, overview, relayName)
			require.Contains(t, overview, domain.TransferSagaName)
			require.NotContains(t, overview, "no relay of this name has led yet")

			account := domain.AccountStream(uuid.MustParse(accounts[0]))
			require.Contains(t, get("/streams?category=account"), account)
			stream := get("/stream?id=" + url.QueryEscape(account))
			require.Contains(t, stream, domain.EventAccountOpened)
			require.Contains(t, stream, "Alice &lt;b&gt;&amp;amp;&lt;/b&gt;", "the owner, escaped")
			proj := get("/projection?name=" + url.QueryEscape(readmodel.Accounts))
			require.Contains(t, proj, "nothing is parked")
			saga := get("/saga?name=" + domain.TransferSagaName + "&status=done")
			for _, id := range transfers {
				require.Contains(t, saga, id)
			}
			relays := get("/relays")
			require.Contains(t, relays, "token", "the relay's leader")
			require.True(t, strings.Contains(get("/health"), "postgres"))
			feed := get("/feed")
			require.Contains(t, feed, domain.EventTransferRequested)
		})
	}
}
