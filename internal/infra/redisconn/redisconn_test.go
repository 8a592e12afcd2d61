package redisconn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSingle(t *testing.T) {
	for _, tc := range []struct {
		url  string
		addr string
		db   int
		user string
		pass string
		tls  bool
	}{
		{url: "redis://127.0.0.1:6379/0", addr: "127.0.0.1:6379"},
		{url: "redis://localhost/3", addr: "localhost:6379", db: 3},
		{url: "redis://u:p%40ss@h:7000/2", addr: "h:7000", db: 2, user: "u", pass: "p@ss"},
		{url: "rediss://:secret@h:6380", addr: "h:6380", pass: "secret", tls: true},
		{url: "redis://h:1?dial_timeout=3s", addr: "h:1"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			p, err := redisconn.Parse(tc.url)
			require.NoError(t, err)
			require.NotNil(t, p.Single)
			require.Nil(t, p.Cluster)
			assert.Equal(t, tc.addr, p.Single.Addr)
			assert.Equal(t, tc.db, p.Single.DB)
			assert.Equal(t, tc.user, p.Single.Username)
			assert.Equal(t, tc.pass, p.Single.Password)
			assert.Equal(t, tc.tls, p.Single.TLSConfig != nil)
		})
	}
	p, err := redisconn.Parse("redis://h:1?dial_timeout=3s")
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, p.Single.DialTimeout)
}

func TestParseCluster(t *testing.T) {
	for _, tc := range []struct {
		url   string
		addrs []string
		user  string
		pass  string
		tls   bool
	}{
		{
			url:   "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002",
			addrs: []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"},
		},
		{
			url:   "redis://u:pw@h1:7000/0?addr=h2:7001",
			addrs: []string{"h1:7000", "h2:7001"}, user: "u", pass: "pw",
		},
		{
			url:   "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
			addrs: []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"},
		},
		{
			url:   "redis+cluster://h1:7000",
			addrs: []string{"h1:7000"},
		},
		{
			url:   "REDIS+CLUSTER://u:p%40ss@h1,h2:7001,[::1]:7002,[::1]/0",
			addrs: []string{"h1:6379", "h2:7001", "[::1]:7002", "[::1]:6379"}, user: "u", pass: "p@ss",
		},
		{
			url:   "rediss+cluster://:pw@h1:7000,h2:7001/",
			addrs: []string{"h1:7000", "h2:7001"}, pass: "pw", tls: true,
		},
		{
			url:   "redis+cluster://h1:7000,h2:7001?addr=h3:7002&client_name=x",
			addrs: []string{"h1:7000", "h3:7002", "h2:7001"},
		},
	} {
		t.Run(tc.url, func(t *testing.T) {
			p, err := redisconn.Parse(tc.url)
			require.NoError(t, err)
			require.Nil(t, p.Single)
			require.NotNil(t, p.Cluster)
			assert.ElementsMatch(t, tc.addrs, p.Cluster.Addrs)
			assert.Equal(t, tc.user, p.Cluster.Username)
			assert.Equal(t, tc.pass, p.Cluster.Password)
			assert.Equal(t, tc.tls, p.Cluster.TLSConfig != nil)
		})
	}
}

func TestClusterTuning(t *testing.T) {
	p, err := redisconn.Parse("redis+cluster://h1:7000,h2:7001")
	require.NoError(t, err)
	o := p.Cluster
	assert.Equal(t, redisconn.ClusterStateReloadInterval, o.ClusterStateReloadInterval)
	assert.Equal(t, redisconn.ClusterMaxRedirects, o.MaxRedirects)
	assert.Equal(t, redisconn.ClusterMinRetryBackoff, o.MinRetryBackoff)
	assert.Equal(t, redisconn.ClusterMaxRetryBackoff, o.MaxRetryBackoff)
	assert.Equal(t, redisconn.ClusterDialTimeout, o.DialTimeout)
	assert.Equal(t, redisconn.ClusterDialerRetries, o.DialerRetries)
	assert.Equal(t, redisconn.ClusterReadTimeout, o.ReadTimeout)
	assert.Equal(t, redisconn.ClusterWriteTimeout, o.WriteTimeout)
	assert.True(t, o.ContextTimeoutEnabled)

	// The URL's own options win over the tuned defaults.
	p, err = redisconn.Parse("redis+cluster://h1:7000?dial_timeout=3s&read_timeout=0&max_redirects=2")
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, p.Cluster.DialTimeout)
	assert.Equal(t, time.Duration(-1), p.Cluster.ReadTimeout) // disabled
	assert.Equal(t, 2, p.Cluster.MaxRedirects)
}

func TestParseErrors(t *testing.T) {
	for _, raw := range []string{
		"",
		"   ",
		"127.0.0.1:6379",
		"http://h:1",
		"redis://u:topsecret@h:notaport/0",
		"redis://u:topsecret@h:1/notadb",
		"redis://u:topsecret@h:1?bogus=1",
		"redis://u:topsecret@h:1?dial_timeout=soon",
		"redis://u:topsecret@h:1?addr=h2",
		"redis://u:topsecret@h:1?addr=h2:x",
		"redis://u:topsecret@h:1/3?addr=h2:2",
		"redis://u:topsecret@h:1?pool_size=99999999999",
		"redis://u:topsecret@h:1?addr=h2:2&pool_size=99999999999",
		"redis+cluster://",
		"redis+cluster://u:topsecret@",
		"redis+cluster://u:topsecret@h1:1,,h2:2",
		"redis+cluster://u:topsecret@h1:1,h2:x",
		"redis+cluster://u:topsecret@h1:1,h2:99999",
		"redis+cluster://u:topsecret@h1:x,h2:2",
		"redis+cluster://u:topsecret@h1:1,:2",
		"redis+cluster://u:topsecret@h1:1,::1:2",
		"redis+cluster://u:topsecret@h1:1/5",
		"redis+cluster://u:topsecret@h1:1?nope=1",
		"redis+cluster://u:top/secret@h1:1",
		"redis://u:top%zzsecret@h:1",
		"redis://u:123/topsecret@h:1",
		"redis://u:top?secret@h:1",
	} {
		t.Run(raw, func(t *testing.T) {
			c, err := redisconn.Open(context.Background(), raw)
			require.Error(t, err)
			require.Nil(t, c)
			var ue *redisconn.URLError
			require.ErrorAs(t, err, &ue, "%v", err)
			assert.NotContains(t, err.Error(), "secret")
			assert.NotContains(t, err.Error(), "top")
			assert.True(t, strings.HasPrefix(err.Error(), "redisconn: invalid Redis URL"), err.Error())
			t.Log(err)
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:secret@h:1/0":             "redis://u:xxxxx@h:1/0",
		"redis://:secret@h:1":                "redis://:xxxxx@h:1",
		"redis://u@h:1":                      "redis://u@h:1",
		"redis://h:1/0":                      "redis://h:1/0",
		"redis+cluster://u:s@h1:1,h2:2?x=1":  "redis+cluster://u:xxxxx@h1:1,h2:2?x=1",
		"redis://u:se/cr@et@h:1":             "redis://u:xxxxx@h:1",
		"unix://u:s@/tmp/redis.sock?db=1":    "unix://u:xxxxx@/tmp/redis.sock?db=1",
		"unix:///tmp/redis.sock":             "unix:///tmp/redis.sock",
		"not a url":                          "not a url",
		"redis://h:1?client_name=a@b":        "redis://h:xxxxx@b", // over-redacted, never under
		"redis://u:pa?ss@h:1":                "redis://u:xxxxx@h:1",
		"redis+cluster://u:p%40ss@h1:1,h2:2": "redis+cluster://u:xxxxx@h1:1,h2:2",
	} {
		assert.Equal(t, want, redisconn.Redact(in), in)
	}
}

func TestOpenDoesNotDialByDefault(t *testing.T) {
	ctx := context.Background()
	// Nothing listens on port 1: Open succeeds and the first command fails.
	// (One dial attempt per command keeps the test short.)
	fast := redisconn.WithOptions(func(o *redis.Options) { o.DialerRetries, o.MaxRetries = 1, -1 })
	for _, raw := range []string{"redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1,127.0.0.1:2"} {
		c, err := redisconn.Open(ctx, raw, fast)
		require.NoError(t, err, raw)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		require.Error(t, c.Ping(cctx).Err())
		cancel()
		require.NoError(t, c.Close())

		cctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		_, err = redisconn.Open(cctx, raw, fast, redisconn.WithPing())
		cancel()
		require.Error(t, err, raw)
		var ue *redisconn.URLError
		assert.False(t, errors.As(err, &ue), "an unreachable server is not a URL error")
	}
}

func TestOpenSingle(t *testing.T) {
	ctx := context.Background()
	_, prefix := testsvc.Redis(t) // checks the server answers; cleans the prefix
	c, err := redisconn.Open(ctx, testsvc.RedisURL(), redisconn.WithPing(),
		redisconn.WithOptions(func(o *redis.Options) { o.ClientName = "redisconn-test" }))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	rc, ok := c.(*redis.Client)
	require.True(t, ok, "a redis:// URL gives a *redis.Client, got %T", c)
	assert.Equal(t, "redisconn-test", rc.Options().ClientName)
	require.NoError(t, c.Set(ctx, prefix+"k", "v", time.Minute).Err())
	v, err := c.Get(ctx, prefix+"k").Result()
	require.NoError(t, err)
	assert.Equal(t, "v", v)
}
