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

// giveUp is when a test stops waiting for something: shortly before the
// test binary's own -timeout, so that a hang fails saying what was
// awaited rather than with a goroutine dump. There is no other limit: a
// slow machine (the race detector, two cores shared with other jobs) is
// no failure, so waits are on events and invariants, never on a budget
// of wall-clock time.
func giveUp(t testing.TB) time.Time {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			return dl.Add(-min(15*time.Second, time.Until(dl)/10))
		}
	}
	return time.Now().Add(time.Hour)
}

// ctxFor is a context for a test's calls: it ends with the test binary's
// -timeout, after giveUp, so that a wait fails saying what it waited for.
func ctxFor(t testing.TB) context.Context {
	end := time.Now().Add(2 * time.Hour)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			end = dl
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds (or the test is about to time out).
func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	end := giveUp(t)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// await waits until ch is closed (or the test is about to time out).
func await(t testing.TB, what string, ch <-chan struct{}, state func() any) {
	t.Helper()
	timer := time.NewTimer(time.Until(giveUp(t)))
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("%s: not yet: %+v", what, state())
	}
}

// equalTables compares what replication carries: keys, class, state and
// value, and the last-seen times. A record holds a flow's idle time,
// read at the flush, and the follower counts it back from the time the
// stream stored the record: so on the follower a flow was last seen no
// earlier than on the primary, and later by at most the time from the
// read to the store, which is at most the publisher's longest flush
// (late, the flow was seen again on the primary since it was sent).
func equalTables(a, b *flowcache.Table[Flow], late time.Duration) error {
	x, y := a.Dump(), b.Dump()
	if len(x) != len(y) {
		return fmt.Errorf("primary has %d flows, follower %d", len(x), len(y))
	}
	for i := range x {
		p, f := x[i], y[i]
		if p.Key != f.Key || p.Reply != f.Reply || p.Paired != f.Paired || p.Class != f.Class || p.State != f.State || p.Value != f.Value {
			return fmt.Errorf("flow %d:\nprimary  %+v\nfollower %+v", i, p, f)
		}
		if d := f.LastSeen.Sub(p.LastSeen); d < 0 || d > late {
			return fmt.Errorf("flow %v: last seen %v on the primary, %v on the follower (%v later; at most %v allowed)", p.Key, p.LastSeen, f.LastSeen, d, late)
		}
	}
	return nil
}
