// Package localproc runs local child processes for tests and for the
// `eskit bench` command: it finds their binaries (FindBinary), picks free
// loopback ports (FreePorts), starts them in their own process group and
// signals or kills them by PID (Start, Process, Server), keeps the tails of
// their logs (Server.Tail, TailLines, TailBuffer), and starts the one kind
// of server both callers need a recipe for: redis-server, standalone or as
// a Redis Cluster created with `redis-cli --cluster create`
// (StartRedisServer, NewRedisCluster).
//
// It never imports "testing" and never fails anything itself: every
// function returns an error, without a package prefix, for its caller
// (internal/clustertest, a testing.TB wrapper, and internal/bench) to wrap.
// Looking binaries up and naming the Debian package to install is left to
// the caller too, since the advice differs (make test vs make
// cluster-deps).
package localproc
