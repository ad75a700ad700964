package reclaim_test

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// owner stands in for a flowcache Table. It is bigger than 16 bytes so it
// is not a tiny allocation, whose collection the runtime may delay.
type owner struct {
	passes atomic.Int64
	_      [64]byte
}

func TestWatch(t *testing.T) {
	d := reclaim.NewDomain()
	o := &owner{}
	cancel := reclaim.Watch(d, o, func(o *owner) { o.passes.Add(1) })
	if s := d.Stats(); s.Watched != 1 {
		t.Fatalf("Watched = %d after Watch, want 1", s.Watched)
	}
	tick(t, d)
	tick(t, d)
	if n := o.passes.Load(); n != 2 {
		t.Fatalf("pass ran %d times in 2 ticks, want 2", n)
	}
	cancel()
	cancel() // idempotent
	tick(t, d)
	if n := o.passes.Load(); n != 2 {
		t.Fatalf("pass ran after cancel (%d runs)", n)
	}
	if s := d.Stats(); s.Watched != 0 {
		t.Fatalf("Watched = %d after cancel, want 0", s.Watched)
	}
}

func TestWatchCancelFromPass(t *testing.T) {
	d := reclaim.NewDomain()
	o := &owner{}
	var cancel func()
	cancel = reclaim.Watch(d, o, func(o *owner) {
		o.passes.Add(1)
		cancel() // must not deadlock
	})
	tick(t, d)
	tick(t, d)
	if n := o.passes.Load(); n != 1 {
		t.Fatalf("pass ran %d times, want 1", n)
	}
	if s := d.Stats(); s.Watched != 0 {
		t.Fatalf("Watched = %d, want 0", s.Watched)
	}
}

func TestWatchNil(t *testing.T) {
	d := reclaim.NewDomain()
	reclaim.Watch[owner](d, nil, func(*owner) { t.Error("pass ran with a nil owner") })()
	reclaim.Watch(d, &owner{}, nil)()
	tick(t, d)
	if s := d.Stats(); s.Watched != 0 {
		t.Fatalf("Watched = %d, want 0", s.Watched)
	}
}

func TestWatchPassPanics(t *testing.T) {
	d := reclaim.NewDomain()
	bad, good := &owner{}, &owner{}
	defer reclaim.Watch(d, bad, func(o *owner) { o.passes.Add(1); panic("expiry bug") })()
	defer reclaim.Watch(d, good, func(o *owner) { o.passes.Add(1) })()
	tick(t, d)
	tick(t, d)
	if b, g := bad.passes.Load(), good.passes.Load(); b != 2 || g != 2 {
		t.Fatalf("passes ran %d (panicking) and %d (good) times, want 2 and 2", b, g)
	}
	s := d.Stats()
	if s.Panics != 2 || s.Watched != 2 || !strings.Contains(s.LastPanic, "watched pass: expiry bug") {
		t.Fatalf("Stats = %v, want 2 panics, both passes still watched", s)
	}
}

// watchDropped registers a pass for an owner that nothing else references,
// and returns a channel closed when the owner has been collected. It is a
// separate function so that no variable of the test keeps the owner alive.
func watchDropped(d *reclaim.Domain, passes *atomic.Int64) (collected chan struct{}) {
	o := &owner{}
	collected = make(chan struct{})
	runtime.AddCleanup(o, func(c chan struct{}) { close(c) }, collected)
	// The pass takes its owner from the argument: capturing o here would
	// keep it alive for as long as the domain holds the pass.
	reclaim.Watch(d, o, func(o *owner) { o.passes.Add(1); passes.Add(1) })
	return collected
}

func TestWatchOwnerCollected(t *testing.T) {
	d := reclaim.NewDomain()
	var passes atomic.Int64
	collected := watchDropped(d, &passes)
	tick(t, d) // the pass holds the owner strongly only during the call
	if n := passes.Load(); n != 1 {
		t.Fatalf("pass ran %d times, want 1", n)
	}

	deadline := time.Now().Add(timeout)
	for done := false; !done; {
		runtime.GC()
		select {
		case <-collected:
			done = true
		case <-time.After(time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("owner never collected: the domain holds it strongly")
			}
		}
	}

	if s := d.Stats(); s.Watched != 1 {
		t.Fatalf("Watched = %d before the next tick, want 1", s.Watched)
	}
	tick(t, d)
	if s := d.Stats(); s.Watched != 0 {
		t.Fatalf("Watched = %d after a tick with the owner gone, want 0", s.Watched)
	}
	if n := passes.Load(); n != 1 {
		t.Fatalf("pass ran %d times, want 1 (none after collection)", n)
	}
}
