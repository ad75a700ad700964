package replicate

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// broker is an in-process JetStream server on loopback, storing on a
// test's temporary directory; restart keeps its port and its store.
type broker struct {
	t    testing.TB
	dir  string
	port int
	s    *server.Server
}

func startBroker(t testing.TB) *broker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	b := &broker{t: t, dir: t.TempDir(), port: port}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	b.t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: b.port, JetStream: true, StoreDir: b.dir, NoSigs: true, NoLog: true})
	if err != nil {
		b.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		b.t.Fatal("JetStream server not ready")
	}
	b.s = s
}

func (b *broker) stop() {
	if b.s != nil {
		b.s.Shutdown()
		b.s.WaitForShutdown()
		b.s = nil
	}
}

func (b *broker) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", b.port) }

// connect is a client of b that reconnects for ever, as a forwarder's would.
func (b *broker) connect(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(b.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return jsOf(t, nc)
}

type jsConn = jetstream.JetStream

func jsOf(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// realTable is a table on the real clock, with a short class 1 for
// expiries; no Reclaimer runs, so a test's Expire calls are its only
// passes.
func realTable(t testing.TB, limit int) *flowcache.Table[Flow] {
	t.Helper()
	tb, err := flowcache.New(flowcache.Config[Flow]{Limit: limit, Domain: reclaim.NewDomain(),
		Timeouts: []time.Duration{300 * time.Millisecond, time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// equalTables compares what replication carries: keys, class, state and
// value, and last seen within slack.
func equalTables(a, b *flowcache.Table[Flow], slack time.Duration) error {
	x, y := a.Dump(), b.Dump()
	if len(x) != len(y) {
		return fmt.Errorf("primary has %d flows, follower %d", len(x), len(y))
	}
	for i := range x {
		p, f := x[i], y[i]
		if p.Key != f.Key || p.Reply != f.Reply || p.Paired != f.Paired || p.Class != f.Class || p.State != f.State || p.Value != f.Value {
			return fmt.Errorf("flow %d:\nprimary  %+v\nfollower %+v", i, p, f)
		}
		if d := p.LastSeen.Sub(f.LastSeen).Abs(); d > slack {
			return fmt.Errorf("flow %v: last seen %v on the primary, %v on the follower", p.Key, p.LastSeen, f.LastSeen)
		}
	}
	return nil
}
