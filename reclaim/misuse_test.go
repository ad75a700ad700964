package reclaim_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// panicsWith runs f on the calling goroutine, failing the test if it
// does not panic with a message that says want. (The callers bound it
// with within.)
func panicsWith(t *testing.T, what, want string, f func()) {
	t.Helper()
	var msg any
	func() {
		defer func() { msg = recover() }()
		f()
	}()
	s, _ := msg.(string)
	if msg == nil || !strings.Contains(s, want) {
		t.Fatalf("%s: panic %v, want one that says %q", what, msg, want)
	}
}

// Goroutine ids, as the misuse checks read them: distinct per goroutine,
// the same within one.
func TestGoid(t *testing.T) {
	a, b := reclaim.Goid(), reclaim.Goid()
	var other int64
	within(t, "goroutine", func() { other = reclaim.Goid() })
	if a == 0 || a != b || other == 0 || other == a {
		t.Fatalf("goid %d, again %d, another goroutine's %d", a, b, other)
	}
}

// Domain.Synchronize from the goroutine that owns a registered Reader
// would wait for itself: it panics, naming the rule, at once when the
// Reader has reported from this goroutine, and after the owner grace when
// this goroutine only registered it. A Reader handed to a worker that
// quiesces does not count against its registrar.
func TestSynchronizeOwnReaderPanics(t *testing.T) {
	defer reclaim.SetOwnerGrace(50 * time.Millisecond)()
	const rule = "whose own Reader is registered"
	t.Run("reported", func(t *testing.T) {
		d := reclaim.NewDomain()
		within(t, "worker", func() {
			r := d.Register()
			defer r.Unregister()
			d.Defer(func() {})
			tick(t, d)
			r.Quiescent() // reports the new epoch: r is this goroutine's
			start := time.Now()
			panicsWith(t, "Synchronize", rule, func() { d.Synchronize() })
			if el := time.Since(start); el > 40*time.Millisecond {
				t.Errorf("a reported Reader took %v to be caught, want at once", el)
			}
		})
	})
	t.Run("registered", func(t *testing.T) {
		d := reclaim.NewDomain()
		within(t, "worker", func() {
			r := d.Register()
			defer r.Unregister()
			panicsWith(t, "Synchronize", rule, func() { d.Synchronize() })
		})
	})
	t.Run("reader synchronize with a second reader", func(t *testing.T) {
		d := reclaim.NewDomain()
		within(t, "worker", func() {
			r1, r2 := d.Register(), d.Register()
			defer r1.Unregister()
			defer r2.Unregister()
			panicsWith(t, "Reader.Synchronize", rule, func() { r1.Synchronize() })
		})
	})
	t.Run("handed to a worker", func(t *testing.T) {
		d := reclaim.NewDomain()
		r := d.Register() // registered here, used by the worker below
		var stop atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			for !stop.Load() {
				time.Sleep(5 * time.Millisecond) // batches slower than the spins
				r.Quiescent()
			}
			r.Unregister()
		}()
		within(t, "Synchronize", d.Synchronize)
		stop.Store(true)
		<-done
	})
}

// A deferred function (an OnRemove callback) that calls Synchronize,
// Tick or Close would wait for the drain that runs it: it panics with the
// rule, which the domain recovers and shows; and so does Close from a
// watched pass, on the Reclaimer's own goroutine.
func TestDeferredWorkMisusePanics(t *testing.T) {
	const rule = "inside deferred work"
	for _, tc := range []struct {
		name  string
		call  func(d *reclaim.Domain, r *reclaim.Reclaimer)
		drive func(t *testing.T, d *reclaim.Domain)
	}{
		{"Synchronize in a tick", func(d *reclaim.Domain, _ *reclaim.Reclaimer) { d.Synchronize() }, tick},
		{"Synchronize in a Synchronize", func(d *reclaim.Domain, _ *reclaim.Reclaimer) { d.Synchronize() },
			func(t *testing.T, d *reclaim.Domain) { within(t, "Synchronize", d.Synchronize) }},
		{"Reader.Synchronize", func(d *reclaim.Domain, _ *reclaim.Reclaimer) {
			r := d.Register()
			defer r.Unregister()
			r.Synchronize()
		}, tick},
		{"Tick", func(_ *reclaim.Domain, r *reclaim.Reclaimer) { r.Tick() }, tick},
		{"Close", func(_ *reclaim.Domain, r *reclaim.Reclaimer) { r.Close() }, tick},
		{"Synchronize in TryReclaim", func(d *reclaim.Domain, _ *reclaim.Reclaimer) { d.Synchronize() },
			func(t *testing.T, d *reclaim.Domain) { within(t, "TryReclaim", func() { d.TryReclaim() }) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			r := reclaim.NewReclaimer(d, time.Hour)
			defer r.Close()
			var after atomic.Bool
			d.Defer(func() { tc.call(d, r) })
			d.Defer(func() { after.Store(true) })
			tc.drive(t, d)
			s := d.Stats()
			if s.Panics != 1 || !strings.Contains(s.LastPanic, rule) {
				t.Fatalf("Stats %v: want the misuse counted as a panic that names the rule", s)
			}
			if !after.Load() {
				t.Fatal("the work deferred after the misuse did not run")
			}
		})
	}
	t.Run("Close in a watched pass", func(t *testing.T) {
		d := reclaim.NewDomain()
		r := reclaim.NewReclaimer(d, time.Millisecond)
		o := &owner{}
		var closing atomic.Bool
		defer reclaim.Watch(d, o, func(*owner) {
			if closing.CompareAndSwap(false, true) {
				r.Close()
			}
		})()
		r.Start()
		eventually(t, "the pass's panic", func() bool { return d.Stats().Panics == 1 })
		if s := d.Stats(); !strings.Contains(s.LastPanic, "own goroutine") {
			t.Fatalf("LastPanic %q: want the rule", s.LastPanic)
		}
		within(t, "Close", func() { r.Close() })
	})
}

// The zero Domain is an empty domain: readers, deferred work, grace
// periods, Synchronize, ticks and Stats all work.
func TestZeroDomain(t *testing.T) {
	var d reclaim.Domain
	if s := d.Stats(); s.Readers != 0 || s.Pending != 0 {
		t.Fatalf("zero Domain's Stats %v", s)
	}
	var ran atomic.Int64
	d.Defer(func() { ran.Add(1) })
	within(t, "Synchronize", d.Synchronize) // no reader: at once
	if ran.Load() != 1 {
		t.Fatalf("ran %d, want 1", ran.Load())
	}
	r := d.Register()
	d.Defer(func() { ran.Add(1) })
	tick(t, &d)
	if ran.Load() != 1 || d.Readers() != 1 {
		t.Fatalf("ran %d with a reader that has not quiesced", ran.Load())
	}
	r.Quiescent()
	tick(t, &d)
	if ran.Load() != 2 {
		t.Fatalf("ran %d after the reader quiesced, want 2", ran.Load())
	}
	done := make(chan struct{})
	go func() { d.Synchronize(); close(done) }()
	r.Unregister() // wakes the waiting Synchronize
	waitFor(t, done, "Synchronize after Unregister")
	if s := d.Stats(); s.Readers != 0 || s.Run != 2 || s.LagTime != 0 {
		t.Fatalf("Stats %v", s)
	}
}

// A reader that holds a grace period back shows in Stats: HeldBack is how
// long, and past StalledAfter it counts as Stalled, until it quiesces.
func TestStalledReaderShows(t *testing.T) {
	d := reclaim.NewDomain()
	var now atomic.Int64
	reclaim.SetClock(d, func() time.Duration { return time.Duration(now.Load()) })
	healthy, stalled := d.Register(), d.Register()
	defer healthy.Unregister()
	d.Defer(func() {})
	tick(t, d) // the epoch moves on at 0 s: both readers now hold it back
	healthy.Quiescent()
	for _, step := range []struct {
		at      time.Duration
		stalled int
	}{{time.Second, 0}, {reclaim.StalledAfter, 0}, {reclaim.StalledAfter + time.Second, 1}} {
		now.Store(int64(step.at))
		s := d.Stats()
		if s.HeldBack != step.at || s.Stalled != step.stalled {
			t.Fatalf("at %v: HeldBack %v, Stalled %d; want %v, %d", step.at, s.HeldBack, s.Stalled, step.at, step.stalled)
		}
	}
	if s := d.Stats().String(); !strings.Contains(s, "stalled=1") {
		t.Fatalf("String() %q does not show the stalled reader", s)
	}
	stalled.Quiescent()
	if s := d.Stats(); s.HeldBack != 0 || s.Stalled != 0 {
		t.Fatalf("after it quiesced: %v", s)
	}
	stalled.Unregister()
}
