package flowcache

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// Memory comes back (invariants 4 and 14 in docs/DESIGN.md): a table
// filled to its limit that drains to 1 %, its survivors scattered among
// the expired flows, gives back what the expired flows held, in one pass
// and one grace period, and goes on working.
func TestMemoryComesBackAfterDrain(t *testing.T) {
	flows := 1_000_000
	if raceEnabled || testing.Short() {
		flows = 100_000
	}
	base := heapAlloc()
	d := reclaim.NewDomain()
	clk := newFakeClock()
	t0 := clk.Now()
	var gone atomic.Int64
	tb, err := New(Config[[16]byte]{
		Limit: flows, TTL: time.Minute, Clock: clk.Now, Domain: d,
		OnRemove: func(e *Entry[[16]byte], _ Cause) { gone.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := range flows {
		if _, err := tb.Insert(testKey(i), [16]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	peak := heapAlloc() - base
	full := tb.Stats()

	// 1 % of the flows see traffic half a TTL later; the rest go idle.
	tb.Expire(t0.Add(30 * time.Second))
	for i := 0; i < flows; i += 100 {
		if _, ok := tb.Get(testKey(i)); !ok {
			t.Fatalf("flow %d missing", i)
		}
	}
	res := tb.Expire(t0.Add(time.Minute))
	d.Synchronize() // the grace period: OnRemove runs, the domain lets go
	after := heapAlloc() - base
	st := tb.Stats()
	t.Logf("peak %d B (%.1f B/flow), after %d B (%.1f B/live flow): %.2f %% of peak; pass %+v; slots %d → %d",
		peak, float64(peak)/float64(flows), after, float64(after)/float64(st.Live), 100*float64(after)/float64(peak),
		res, full.Slots, st.Slots)
	if want := flows - flows/100; res.Expired != want || gone.Load() != int64(want) {
		t.Fatalf("expired %d, callbacks %d; want %d", res.Expired, gone.Load(), want)
	}
	if float64(after) > 0.05*float64(peak) {
		t.Fatalf("after the drain the table holds %d B, %.1f %% of its peak %d B; want under 5 %%",
			after, 100*float64(after)/float64(peak), peak)
	}

	// It still works: lookups, inserts back up to the limit, a dump.
	for i := 0; i < flows; i += 100 {
		if _, ok := tb.Get(testKey(i)); !ok {
			t.Fatalf("flow %d lost by the drain", i)
		}
	}
	for i := range flows {
		if i%100 != 0 {
			if _, err := tb.Insert(testKey(i), [16]byte{}); err != nil {
				t.Fatalf("insert %d after the drain: %v", i, err)
			}
		}
	}
	if tb.Len() != flows {
		t.Fatalf("len %d after refilling, want %d", tb.Len(), flows)
	}
	if _, err := tb.Insert(testKey(flows), [16]byte{}); err == nil {
		t.Fatal("insert past the limit after the drain")
	}
	if rows := tb.Dump(); len(rows) != flows || rows[0].Key.Compare(rows[len(rows)-1].Key) >= 0 {
		t.Fatalf("dump after the drain: %d rows", len(rows))
	}
}

// The collector does not mark flows (invariant 15): with a pointer-free
// value a table holds no heap object per flow, only one per 256 (its
// chunks), so the objects on the heap grow by far less than the flows.
func TestNoHeapObjectPerFlow(t *testing.T) {
	const flows = 200_000
	objects := func() uint64 {
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/heap/objects:objects"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	tb := newTable(t, Config[[16]byte]{Limit: flows})
	before := objects()
	for i := range flows {
		if _, err := tb.Insert(testKey(i), [16]byte{}); err != nil {
			t.Fatal(err)
		}
	}
	added := objects() - before
	t.Logf("%d flows added %d heap objects", flows, added)
	if added > flows/100 {
		t.Fatalf("%d flows added %d heap objects: more than one per 100 flows", flows, added)
	}
	runtime.KeepAlive(tb)
}

// Memory comes back however the survivors lie (invariant 14), in heap in
// use (spans that hold any object), not only in live objects: after a
// drain that leaves every 100th flow, scattered among the ones that left,
// the spans holding the drained flows go back.
func TestHeapInUseComesBackAfterScatteredDrain(t *testing.T) {
	flows := 1_000_000
	if raceEnabled || testing.Short() {
		flows = 200_000
	}
	d := reclaim.NewDomain()
	clk := newFakeClock()
	t0 := clk.Now()
	base := heapInuse()
	tb, err := New(Config[[16]byte]{Limit: flows, TTL: time.Minute, Clock: clk.Now, Domain: d})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := range flows {
		tb.Insert(testKey(i), [16]byte{})
	}
	peak := heapInuse() - base
	tb.Expire(t0.Add(30 * time.Second))
	for i := 0; i < flows; i += 100 {
		tb.Get(testKey(i))
	}
	tb.Expire(t0.Add(time.Minute))
	tb.Expire(t0.Add(time.Minute + time.Second))
	d.Synchronize()
	after := heapInuse() - base
	t.Logf("heap in use: peak %d B, after %d B: %.1f %%; %v", peak, after, 100*float64(after)/float64(peak), tb.Stats())
	if tb.Len() != flows/100 {
		t.Fatalf("%d flows left, want %d", tb.Len(), flows/100)
	}
	if float64(after) > 0.10*float64(peak) {
		t.Fatalf("heap in use after the drain is %.1f %% of its peak; want at most 10 %%", 100*float64(after)/float64(peak))
	}
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
