package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eskit/eskit/internal/infra/localproc"
)

// localNATS is a nats-server process with JetStream the bench started
// because it was given no NATS URL. It runs apart from the bench, as a
// deployment's server does, so that its CPU time, heap and RSS are not
// counted as eskit's or the baseline's.
type localNATS struct {
	proc *localproc.Process
	dir  string
	url  string
}

// startLocalNATS starts Debian's nats-server on a free loopback port with
// its JetStream store in a temporary directory, and waits until it
// answers.
func startLocalNATS(ctx context.Context) (_ *localNATS, err error) {
	bin, err := findBinary("nats-server", "nats-server", "nats-url")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "eskit-bench-nats-")
	if err != nil {
		return nil, fmt.Errorf("bench: local NATS: %w", err)
	}
	n := &localNATS{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.stop())
		}
	}()
	for range 5 { // another process may take the free port first
		ports, err := localproc.FreePorts(1)
		if err != nil {
			return nil, fmt.Errorf("bench: local NATS: %w", err)
		}
		log := localproc.NewTailBuffer(4 << 10)
		cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(ports[0]), "-sd", dir)
		cmd.Stdout, cmd.Stderr = log, log
		if n.proc, err = startChild("nats-server", cmd); err != nil {
			return nil, err
		}
		n.url = "nats://127.0.0.1:" + strconv.Itoa(ports[0])
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = localproc.WaitFor(wctx, 20*time.Millisecond, n.proc.Done(), func(context.Context) error {
			nc, err := nats.Connect(n.url, nats.Timeout(time.Second))
			if err != nil {
				return err
			}
			nc.Close()
			return nil
		})
		cancel()
		if err == nil {
			return n, nil
		}
		if kerr := killChild(n.proc); kerr != nil {
			return nil, kerr
		}
		n.proc = nil
		if !strings.Contains(strings.ToLower(log.String()), "address already in use") {
			return nil, fmt.Errorf("bench: local nats-server did not start: %w\n%s", err, localproc.TailLines(log.String(), 20))
		}
	}
	return nil, errors.New("bench: local nats-server: no free port after 5 tries")
}

// stop kills the server by PID and removes its store.
func (n *localNATS) stop() error {
	var err error
	if n.proc != nil {
		err = killChild(n.proc)
	}
	return errors.Join(err, os.RemoveAll(n.dir))
}
