// Package race_test holds the tests that back flowcache's concurrency
// claims: stress (causes and counts per flow, evictions, pairs), moves
// that must lose no count or state swap, walks under writes,
// linearizability of one- and two-key flows (porcupine), model tests
// (rapid), an op-sequence fuzzer, hash-flood attacks, and faults. They
// are meant for go test -race; docs/DESIGN.md lists the invariants each
// one holds.
//
// Budgets: every stress test runs until it has done its share of
// operations or hit its time cap, whichever comes first. STRESS=long (and
// STRESS_DURATION, default 10m) or -stress.duration=D runs each one for D
// instead.
package race_test

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
)

var stressDuration = flag.Duration("stress.duration", 0, "run each stress test for this long (0: the default op budget; STRESS=long STRESS_DURATION=D does the same)")

// budget says how long a stress test runs: until ops >= minOps and at
// least minDur has passed, but never past maxDur. In long mode it runs for
// exactly the asked duration.
type budget struct {
	minOps         int64
	minDur, maxDur time.Duration
	long           bool
}

// stressBudget scales a test's share of operations: ops is what it must do
// under -race, where everything is slower; without the race detector it
// does the same count (they are quick) within a shorter cap.
func stressBudget(ops int64, raceCap, plainCap time.Duration) budget {
	if d := longDuration(); d > 0 {
		return budget{minDur: d, maxDur: d, long: true}
	}
	b := budget{minOps: ops, minDur: 500 * time.Millisecond, maxDur: plainCap}
	if raceEnabled {
		b.maxDur = raceCap
	}
	return b
}

func longDuration() time.Duration {
	if *stressDuration > 0 {
		return *stressDuration
	}
	if os.Getenv("STRESS") != "long" {
		return 0
	}
	if s := os.Getenv("STRESS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			panic(fmt.Sprintf("STRESS_DURATION=%q: %v", s, err))
		}
		return d
	}
	return 10 * time.Minute
}

// done reports whether a test that started at start and has done ops
// operations should stop.
func (b budget) done(start time.Time, ops int64) bool {
	el := time.Since(start)
	if el >= b.maxDur {
		return true
	}
	return !b.long && ops >= b.minOps && el >= b.minDur
}

// key returns the i-th test key: distinct for distinct i, IPv4 TCP.
func key(i uint32) flowcache.FlowKey {
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	dst := netip.AddrFrom4([4]byte{192, 0, 2, byte(i >> 24)})
	return flowcache.NewFlowKey(src, dst, uint16(i*7919), 443, flowcache.ProtoTCP)
}

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	return c
}

func (c *fakeClock) Now() time.Time { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration) time.Time {
	return time.UnixMilli(c.ms.Add(d.Milliseconds()))
}

// failures collects errors from goroutines that may not call t.Fatal, and
// stops reporting after a few so a broken run does not flood the log.
type failures struct {
	mu  sync.Mutex
	n   int
	msg []string
}

func (f *failures) add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(f.msg) < 20 {
		f.msg = append(f.msg, fmt.Sprintf(format, args...))
	}
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *failures) report(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.msg {
		t.Error(m)
	}
	if f.n > len(f.msg) {
		t.Errorf("... and %d more failures", f.n-len(f.msg))
	}
}
