package reclaim_test

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
	"go.uber.org/goleak"
)

func TestReclaimerLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(*reclaim.Reclaimer) error
	}{
		{"close without start", func(r *reclaim.Reclaimer) error { return r.Close() }},
		{"start close", func(r *reclaim.Reclaimer) error { r.Start(); return r.Close() }},
		{"start twice", func(r *reclaim.Reclaimer) error { r.Start(); r.Start(); return r.Close() }},
		{"close twice", func(r *reclaim.Reclaimer) error {
			r.Start()
			if err := r.Close(); err != nil {
				return err
			}
			return r.Close()
		}},
		{"start after close", func(r *reclaim.Reclaimer) error {
			if err := r.Close(); err != nil {
				return err
			}
			r.Start()
			return r.Close()
		}},
		{"tick after close", func(r *reclaim.Reclaimer) error {
			r.Start()
			err := r.Close()
			r.Tick()
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			r := reclaim.NewReclaimer(d, time.Millisecond)
			within(t, tc.name, func() {
				if err := tc.run(r); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			goleak.VerifyNone(t)
		})
	}
}

func TestReclaimerNilDomain(t *testing.T) {
	r := reclaim.NewReclaimer(nil, 0)
	var ran atomic.Bool
	reclaim.Default().Defer(func() { ran.Store(true) })
	r.Tick()
	if !ran.Load() {
		t.Fatal("NewReclaimer(nil, …) does not drive Default()")
	}
}

// ticks returns a pass that signals every run on the returned channel,
// dropping signals nobody waits for.
func ticks() (chan struct{}, func(*owner)) {
	c := make(chan struct{}, 1)
	return c, func(*owner) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(timeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestReclaimerTicks(t *testing.T) {
	d := reclaim.NewDomain()
	o := &owner{}
	// The domain holds o weakly and the pass does not use it: a
	// collection before the first tick would drop the watch.
	defer runtime.KeepAlive(o)
	c, pass := ticks()
	defer reclaim.Watch(d, o, pass)()
	r := reclaim.NewReclaimer(d, time.Millisecond)
	r.Start()
	for i := range 3 {
		waitFor(t, c, "tick "+string(rune('1'+i)))
	}
	// Deferred work is run by the goroutine alone, with no Tick or
	// Synchronize from the test.
	done := make(chan struct{})
	d.Defer(func() { close(done) })
	waitFor(t, done, "deferred work")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t)
}

func TestReclaimerSurvivesPanics(t *testing.T) {
	d := reclaim.NewDomain()
	o := &owner{}
	// The domain holds o weakly and the pass does not use it: a
	// collection before the first tick would drop the watch.
	defer runtime.KeepAlive(o)
	c, pass := ticks()
	defer reclaim.Watch(d, o, pass)()
	r := reclaim.NewReclaimer(d, time.Millisecond)
	r.Start()
	defer r.Close()

	done := make(chan struct{})
	d.Defer(func() { panic("release failed") })
	d.Defer(func() { close(done) })
	waitFor(t, done, "the fn deferred after a panicking one")
	// Two more ticks: the goroutine is still alive after the panic.
	waitFor(t, c, "a tick after the panic")
	waitFor(t, c, "a second tick after the panic")
	if s := d.Stats(); s.Panics != 1 || s.LastPanic != "deferred func: release failed" {
		t.Fatalf("Stats = %v, want the panic counted", s)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t)
}

func TestReclaimerDoesNotWaitForStalledReader(t *testing.T) {
	d := reclaim.NewDomain()
	stalled := d.Register()
	o := &owner{}
	// The domain holds o weakly and the pass does not use it: a
	// collection before the first tick would drop the watch.
	defer runtime.KeepAlive(o)
	c, pass := ticks()
	defer reclaim.Watch(d, o, pass)()
	r := reclaim.NewReclaimer(d, time.Millisecond)
	r.Start()
	var ran atomic.Int64
	for range 3 {
		d.Defer(func() { ran.Add(1) })
		waitFor(t, c, "a tick")
		waitFor(t, c, "a tick")
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("%d fns ran past a stalled reader", n)
	}
	if s := d.Stats(); s.Pending != 3 || s.LagEpochs == 0 {
		t.Fatalf("Stats = %v, want 3 pending and a lag", s)
	}
	stalled.Unregister()
	eventually(t, "the held work to run", func() bool { return ran.Load() == 3 })
	within(t, "Close", func() { _ = r.Close() })
	goleak.VerifyNone(t)
}
