package flowcache

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
	"go.uber.org/goleak"
)

// A Reclaimer's Tick runs the pass of every table on its domain with the
// table's Clock, and then the callbacks that are due.
func TestReclaimerTickExpiresTables(t *testing.T) {
	d := reclaim.NewDomain()
	clk := newFakeClock()
	var gone [2]atomic.Int64
	var tbs [2]*Table[int]
	for i := range tbs {
		tbs[i] = newTable(t, Config[int]{
			Limit: 1000, TTL: 10 * time.Second, Clock: clk.Now, Domain: d,
			OnRemove: func(e *Entry[int], _ Cause) { gone[i].Add(1) },
		})
		for j := range 100 {
			tbs[i].Insert(testKey(j), j)
		}
	}
	r := reclaim.NewReclaimer(d, time.Hour)
	defer r.Close()
	clk.Advance(5 * time.Second)
	r.Tick()
	for i, tb := range tbs {
		if tb.Len() != 100 || tb.Stats().Passes != 1 || tb.CoarseNow() != clk.Now().UnixMilli() {
			t.Fatalf("table %d after a tick at 5 s: %v", i, tb.Stats())
		}
		tb.Get(testKey(0)) // refreshed at 5 s by the tick's clock
	}
	clk.Advance(5 * time.Second)
	r.Tick()
	for i, tb := range tbs {
		if tb.Len() != 1 || gone[i].Load() != 99 {
			t.Fatalf("table %d after a tick at 10 s: len %d, callbacks %d; want 1, 99", i, tb.Len(), gone[i].Load())
		}
		if st := tb.Stats(); st.Expired != 99 || st.Passes != 2 || !st.LastPass.Equal(clk.Now()) {
			t.Fatalf("table %d: %v", i, st)
		}
	}
}

// A started Reclaimer ticks on its own; Close stops its goroutine.
func TestReclaimerStartClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := reclaim.NewDomain()
	clk := newFakeClock()
	var gone atomic.Int64
	tb := newTable(t, Config[int]{
		Limit: 1000, TTL: time.Second, Clock: clk.Now, Domain: d,
		OnRemove: func(e *Entry[int], _ Cause) { gone.Add(1) },
	})
	for j := range 100 {
		tb.Insert(testKey(j), j)
	}
	r := reclaim.NewReclaimer(d, time.Millisecond)
	r.Start()
	clk.Advance(time.Second) // every flow is now a TTL old
	// Wait for the goroutine to do it, not for time to pass: the fake
	// clock alone decides what expires.
	deadline := time.Now().Add(10 * time.Second)
	for gone.Load() != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("the started Reclaimer did not expire the table: %v, %v", tb.Stats(), d.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	if tb.Len() != 0 {
		t.Fatalf("len %d", tb.Len())
	}
	r.Close()
	passes := tb.Stats().Passes
	r.Tick() // still works after Close, on the caller's goroutine
	if tb.Stats().Passes != passes+1 {
		t.Fatal("Tick after Close did not run the pass")
	}
}

// Close is idempotent, works before Start and after it, and Start after
// Close starts nothing.
func TestReclaimerCloseIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := reclaim.NewDomain()
	r := reclaim.NewReclaimer(d, time.Millisecond)
	r.Close()
	r.Close()
	r.Start() // after Close: nothing
	r.Close()

	r = reclaim.NewReclaimer(d, time.Millisecond)
	r.Start()
	r.Start()
	for range 3 {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A closed table leaves its domain: the Reclaimer stops passing over it.
func TestClosedTableLeavesDomain(t *testing.T) {
	d := reclaim.NewDomain()
	clk := newFakeClock()
	a, _ := New(Config[int]{Limit: 10, Clock: clk.Now, Domain: d})
	b, _ := New(Config[int]{Limit: 10, Clock: clk.Now, Domain: d})
	defer b.Close()
	if w := d.Stats().Watched; w != 2 {
		t.Fatalf("watched %d, want 2", w)
	}
	a.Close()
	if w := d.Stats().Watched; w != 1 {
		t.Fatalf("watched %d after Close, want 1", w)
	}
	r := reclaim.NewReclaimer(d, time.Hour)
	defer r.Close()
	r.Tick()
	if a.Stats().Passes != 0 || b.Stats().Passes != 1 {
		t.Fatalf("passes: closed %d, open %d", a.Stats().Passes, b.Stats().Passes)
	}
}

// The domain holds its tables weakly: a table dropped without Close is
// collected, and its registration goes on the next tick.
func TestDroppedTableIsCollected(t *testing.T) {
	d := reclaim.NewDomain()
	r := reclaim.NewReclaimer(d, time.Hour)
	defer r.Close()
	var collected atomic.Bool
	func() {
		tb, err := New(Config[[64]byte]{Limit: 10_000, Domain: d, OnRemove: func(e *Entry[[64]byte], _ Cause) {}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1000 {
			tb.Insert(testKey(i), [64]byte{})
		}
		tb.Remove(testKey(0)) // something deferred, holding an entry
		runtime.AddCleanup(tb, func(*atomic.Bool) { collected.Store(true) }, &collected)
	}()
	r.Tick() // the table is still there, or just gone
	for i := 0; !collected.Load(); i++ {
		if i == 100 {
			t.Fatalf("a dropped table was never collected: %v", d.Stats())
		}
		runtime.GC()
		time.Sleep(time.Millisecond) // cleanups run on their own goroutine
	}
	r.Tick()
	if st := d.Stats(); st.Watched != 0 || st.Pending != 0 {
		t.Fatalf("a collected table is still registered: %v", st)
	}
}
