// Package clustertest starts real local clusters for tests: a Redis Cluster
// of redis-server processes (StartRedisCluster), a standalone redis-server
// with persistence options (StartRedis), a NATS cluster with JetStream of
// nats-server processes (StartNATSCluster) and the same in-process
// (StartEmbeddedNATSCluster). The process handling and the Redis start-up
// are internal/localproc's, shared with `eskit bench`; this package adds
// the testing.TB side (temporary directories, clean-up, failing the test,
// logging the nodes' logs) and the NATS clusters.
//
// Processes come from Debian's packages: redis-server (redis-server),
// redis-cli (redis-tools) and nats-server (nats-server); they are looked up
// on PATH and then in /usr/bin and /usr/sbin. A missing binary fails the
// test with the package to install; `make test` and `make test-cluster`
// install them (scripts/cluster-deps.sh).
//
// Every process listens on free loopback ports only, keeps its files in the
// test's own temporary directory, runs in its own process group, and is
// killed by PID when the test ends, pass or fail (and, through Pdeathsig,
// when the test binary dies first). When a test fails, the tail of every
// node's log is logged.
//
// Fault injection: Kill (SIGKILL, waits for the exit), Stop (SIGSTOP: open
// sockets, no answers, like a paused VM), Cont (SIGCONT) and Restart (same
// ports, same data, so the node rejoins). These methods return errors rather
// than failing the test, so fault goroutines may call them.
//
// Naming: every test that starts a cluster is named Test...Cluster... with
// "Cluster" right after "Test" (TestClusterRedis, TestClusterNATS, ...), so
// `make test-cluster` runs them alone with -run '^TestCluster'; `make test`
// runs them with everything else.
package clustertest
