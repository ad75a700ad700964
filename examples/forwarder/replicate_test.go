package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/nats-io/nats-server/v2/server"
)

// Flows that outlive the forwarder, without root or a network beyond
// loopback: snapshots on a temporary file, and a primary and a standby on
// an in-process JetStream server. e2e.sh does the same with the built
// forwarders, between namespaces, on real captures.

func TestSignalAction(t *testing.T) {
	for _, tc := range []struct {
		sig        os.Signal
		standingBy bool
		want       action
	}{
		{syscall.SIGUSR1, true, actPromote},
		{syscall.SIGUSR1, false, actDump},
		{syscall.SIGUSR2, true, actDump},
		{syscall.SIGUSR2, false, actDump},
		{syscall.SIGHUP, true, actNone},
	} {
		if got := signalAction(tc.sig, tc.standingBy); got != tc.want {
			t.Errorf("%v, standing by %v: %v, want %v", tc.sig, tc.standingBy, got, tc.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string][2]int{"0:10": {0, 10}, "5:": {5, -1}, ":7": {0, 7}, "3:3": {3, 3}} {
		lo, hi, err := parseRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("%q: %d, %d, %v; want %v", in, lo, hi, err, want)
		}
	}
	for _, in := range []string{"", "5", "a:b", "-1:3", "4:2"} {
		if _, _, err := parseRange(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// traffic is a few flows' frames: a, assured by its 4 packets; b, one
// packet (as a SYN); c and its reply, assured by the reply.
func traffic() (a, b, c, cr []byte) {
	return udp4("198.18.0.10", "198.18.0.1", 1000, 53),
		udp4("198.18.0.11", "198.18.0.1", 1001, 80),
		udp4("198.18.0.12", "198.18.0.1", 1002, 443),
		udp4("198.18.0.1", "198.18.0.12", 443, 1002)
}

// run sends frames through a worker on table, one batch each.
func run(t *testing.T, table *flowcache.Table[Flow], frames ...[]byte) *worker {
	var sent [][]byte
	w := testWorker(t, table, DropWhenFull, &sent)
	for _, f := range frames {
		w.handle([][]byte{append([]byte(nil), f...)})
	}
	return w
}

// TestSnapshotRestart: the table written at exit comes back at the next
// start, every flow with its state and counters, and the next packets
// count on those flows instead of creating new ones; the file is gone
// once restored; a damaged one restores nothing and is kept aside.
func TestSnapshotRestart(t *testing.T) {
	a, b, c, cr := traffic()
	before := newTestTable(t, 100)
	run(t, before, a, a, a, a, b, c, cr)
	path := filepath.Join(t.TempDir(), "flows.snap")
	snap := &snapStatus{File: path}
	if err := writeSnapshot(snap, before); err != nil {
		t.Fatal(err)
	}
	// a, b, and c with its reply: a connection's two directions are one
	// flow, a pair, and a snapshot carries it once with both its keys.
	if snap.Written != 3 || snap.Bytes == 0 {
		t.Fatalf("snapshot %+v: want 3 flows", snap)
	}

	after := newTestTable(t, 100)
	got := restoreSnapshot(path, after)
	if got.Restored != 3 || got.RestoreError != "" {
		t.Fatalf("restore %+v", got)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the snapshot is still there after its restore: %v", err)
	}
	if err := sameFlows(before, after, true); err != nil {
		t.Fatal(err)
	}
	w := run(t, after, a, b, c)
	if len(w.seen) != 0 {
		t.Errorf("the restored table inserted %d flows for packets of flows it had", len(w.seen))
	}
	if r := flowOf(t, after, a); r == nil || r.Packets != 5 || r.State&assured == 0 {
		t.Errorf("a after the restart: %+v, want 5 packets, assured", r)
	}

	// No snapshot: nothing restored, no error. A damaged one: the same,
	// with the reason, and the file kept as .bad.
	if s := restoreSnapshot(path, newTestTable(t, 100)); s.Restored != 0 || s.RestoreError != "" {
		t.Errorf("no file: %+v", s)
	}
	if err := os.WriteFile(path, []byte("FCSNAP garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := newTestTable(t, 100)
	if s := restoreSnapshot(path, empty); s.RestoreError == "" || empty.Len() != 0 {
		t.Errorf("damaged file: %+v, %d flows", s, empty.Len())
	}
	if _, err := os.Stat(path + ".bad"); err != nil {
		t.Errorf("the damaged snapshot was not kept aside: %v", err)
	}
}

// sameFlows compares two tables' flows: keys, value and state, and
// with counters, packets and bytes too.
func sameFlows(want, got *flowcache.Table[Flow], counters bool) error {
	x, y := want.Dump(), got.Dump()
	if len(x) != len(y) {
		return fmt.Errorf("%d flows, want %d", len(y), len(x))
	}
	for i := range x {
		p, q := x[i], y[i]
		if p.Key != q.Key || p.Value != q.Value || p.State != q.State || counters && (p.Packets != q.Packets || p.Bytes != q.Bytes) {
			return fmt.Errorf("flow %d:\n got %+v\nwant %+v", i, q, p)
		}
	}
	return nil
}

// startJetStream is an in-process JetStream server on loopback, its
// store in a temporary directory, as cmd/jetstream runs one for e2e.sh.
func startJetStream(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Skip("JetStream server not ready on loopback")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return "nats://" + s.Addr().String()
}

func replOptions(url string, standby bool) options {
	o := options{replName: "test", replFilter: "assured", leaseTTL: 600 * time.Millisecond}
	if standby {
		o.standby = url
	} else {
		o.replicate = url
	}
	return o
}

// standbyForwarder is a forwarder in standby with no workers (promotion
// starts none), its monitor running on its own signal channel.
func standbyForwarder(t *testing.T, url string) (*forwarder, *flowcache.Table[Flow]) {
	t.Helper()
	table := newTestTable(t, 100)
	o := replOptions(url, true)
	repl, err := startStandby(o, table)
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{o: o, table: table, domain: reclaim.NewDomain(), repl: repl, signals: make(chan os.Signal, 1)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.before()
	done := make(chan struct{})
	go func() { defer close(done); f.monitor() }()
	t.Cleanup(func() { f.cancel(); <-done; repl.close() })
	return f, table
}

// eventually polls cond until it holds, or the test is about to time out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(time.Hour)
	if dl, ok := t.Deadline(); ok {
		end = dl.Add(-min(15*time.Second, time.Until(dl)/10))
	}
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not yet", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStandbyTakesOver: a standby forwarder follows its primary's
// assured flows (not the one-packet flow), and once promoted, by SIGUSR1
// or by the primary's lease lapsing, it publishes at the next epoch (the
// old primary is fenced) and the next packets count on the flows it
// holds.
func TestStandbyTakesOver(t *testing.T) {
	for _, how := range []string{"signal", "lease"} {
		t.Run(how, func(t *testing.T) {
			url := startJetStream(t)
			a, b, c, cr := traffic()
			primary := newTestTable(t, 100)
			pr, err := startPrimary(replOptions(url, false), primary)
			if err != nil {
				t.Fatal(err)
			}
			defer pr.close()
			run(t, primary, a, a, a, a, b, c, cr)

			f, standby := standbyForwarder(t, url)
			if got := f.report().Replication; got == nil || got.Role != "standby" {
				t.Fatalf("replication status %+v, want a standby", got)
			}
			eventually(t, "the standby holds the primary's assured flows", func() bool {
				return standby.Len() == 2 // a, and c with its reply as one pair; not b
			})
			for _, fr := range [][]byte{a, c, cr} {
				p, s := flowOf(t, primary, fr), flowOf(t, standby, fr)
				if s == nil || s.State != p.State || s.Packets != p.Packets {
					t.Errorf("%v on the standby: %+v, primary %+v", keyOf(t, fr), s, p)
				}
			}
			if flowOf(t, standby, b) != nil {
				t.Error("the unassured one-packet flow was replicated")
			}

			epoch := pr.Stats().Epoch
			switch how {
			case "signal":
				f.signals <- syscall.SIGUSR1
			case "lease":
				pr.close() // the primary dies: its lease is not renewed
			}
			eventually(t, "the standby is promoted", func() bool { return !f.repl.standingBy() })
			st := f.report().Replication
			if st.Role != "primary" || st.PromotedBy != how || st.Epoch != epoch+1 {
				t.Errorf("after promotion: %+v, want primary, promoted by %s, epoch %d", st, how, epoch+1)
			}
			if how == "signal" {
				eventually(t, "the old primary is fenced", func() bool {
					select {
					case <-pr.pub.Fenced():
						return true
					default:
						return false
					}
				})
			}
			w := run(t, standby, a, c, b)
			// seen holds both keys of each flow inserted: b's two.
			if _, ok := w.seen[keyOf(t, b)]; len(w.seen) != 2 || !ok {
				t.Errorf("the promoted standby inserted flows under %d keys, want b's 2 (b, which it did not hold)", len(w.seen))
			}
			if s := flowOf(t, standby, a); s == nil || s.Packets != 5 {
				t.Errorf("a on the promoted standby: %+v, want 5 packets", s)
			}
		})
	}
}
