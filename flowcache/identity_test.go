package flowcache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// SetValue gives a flow a new value and keeps the rest: both keys of a
// pair (across shards too), class, state, counters, hits, last seen; no
// OnRemove, no cause counted. A worker's old copy keeps its old value and
// still counts on the flow. It fails on a flow that left, or whose key
// names another flow now.
func TestSetValueKeepsTheFlow(t *testing.T) {
	var log causeLog
	d := reclaim.NewDomain()
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 100, Shards: 4, Domain: d, OnRemove: log.fn, Clock: clk.Now,
		Timeouts: []time.Duration{time.Hour}})
	for i := range 20 { // pairs whose keys lie in two shards and in one
		tb.InsertPair(testKey(2*i), testKey(2*i+1), i)
	}
	worker := d.Register()
	defer worker.Unregister()
	for i := range 20 {
		e, _ := tb.Get(testKey(2 * i))
		for range 1 + i {
			e.Count(100)
		}
		e.CompareAndSwapState(0, uint32(i+7))
		tb.SetClass(e, 1)
	}
	tb.Expire(clk.Advance(time.Minute))
	for i := range 20 {
		tb.Get(testKey(2*i + 1)) // seen through the reply key, a minute on
	}
	before := map[int]DumpRow[int]{}
	for _, r := range tb.Dump() {
		before[r.Value] = r
	}
	stBefore := tb.Stats()
	olds := make([]*Entry[int], 20)
	for i := range 20 {
		olds[i], _ = tb.Get(testKey(2*i + 1))
		nu, ok := tb.SetValue(olds[i], 1000+i)
		if !ok || nu == olds[i] || *nu.Value() != 1000+i {
			t.Fatalf("flow %d: SetValue = %v, %v", i, nu, ok)
		}
		for _, k := range []FlowKey{testKey(2 * i), testKey(2*i + 1)} {
			if g, _ := tb.Get(k); g != nu {
				t.Fatalf("flow %d: %v finds %v, not the new record", i, k, g)
			}
		}
		if *olds[i].Value() != i {
			t.Fatalf("flow %d: the old copy's value changed to %d", i, *olds[i].Value())
		}
		olds[i].Count(1) // on the old copy: lands on the flow
	}
	worker.Quiescent()
	worker.Synchronize()
	for _, r := range tb.Dump() {
		b := before[r.Value-1000]
		want := b
		want.Value = r.Value
		want.Packets, want.Bytes = b.Packets+1, b.Bytes+1
		want.Hits = r.Hits // sampled
		if r != want {
			t.Fatalf("after SetValue %+v, want %+v", r, want)
		}
	}
	st := tb.Stats()
	if st.Inserts != stBefore.Inserts || st.Replaced != 0 || st.Removed != 0 || st.Live != 20 || st.Pairs != 20 {
		t.Fatalf("stats %v", st)
	}
	if log.total() != 0 {
		t.Fatalf("%d OnRemove calls", log.total())
	}
	// A flow that left, and a key that names another flow now.
	tb.Remove(testKey(0))
	if _, ok := tb.SetValue(olds[0], 5); ok {
		t.Fatal("SetValue of a removed flow succeeded")
	}
	tb.Insert(testKey(2), 77) // replaces flow 1
	if _, ok := tb.SetValue(olds[1], 5); ok {
		t.Fatal("SetValue of a replaced flow succeeded")
	}
	if e, _ := tb.Get(testKey(2)); *e.Value() != 77 {
		t.Fatal("SetValue changed the flow that took the key")
	}
}

// RemoveEntry removes exactly the flow it is given: not one that took its
// key since; through either key of a pair and across SetValue and moves.
func TestRemoveEntry(t *testing.T) {
	var log causeLog
	d := reclaim.NewDomain()
	tb := newTable(t, Config[int]{Limit: 100, Shards: 4, Domain: d, OnRemove: log.fn})
	a, _ := tb.InsertPair(testKey(1), testKey(2), 1)
	tb.Insert(testKey(1), 2) // replaces a: testKey(1) names flow 2 now
	if tb.RemoveEntry(a) {
		t.Fatal("RemoveEntry removed the flow that took the key")
	}
	if e, _ := tb.Get(testKey(1)); e == nil || *e.Value() != 2 {
		t.Fatal("flow 2 is gone")
	}
	b, _ := tb.InsertPair(testKey(3), testKey(4), 3)
	r, _ := tb.Get(testKey(4))
	c, _ := tb.SetValue(r, 4) // flow 3's value is 4 now
	tb.CompactAll()           // and it moved
	if !tb.RemoveEntry(b) {   // its oldest copy still names it
		t.Fatal("RemoveEntry of a flow that moved and changed value failed")
	}
	for _, k := range []FlowKey{testKey(3), testKey(4)} {
		if _, ok := tb.Get(k); ok {
			t.Fatalf("%v still there", k)
		}
	}
	if tb.RemoveEntry(c) || tb.RemoveEntry(nil) {
		t.Fatal("RemoveEntry of a removed flow reported true")
	}
	d.Synchronize()
	if got := log.of(4); !slices.Equal(got, []Cause{Removed}) {
		t.Fatalf("flow 3 (value 4) left with %v, want [removed]", got)
	}
	if got := log.of(1); !slices.Equal(got, []Cause{Replaced}) {
		t.Fatalf("flow 1 left with %v", got)
	}
	if st := tb.Stats(); st.Removed != 1 || st.Live != 1 {
		t.Fatalf("stats %v", st)
	}
}

// A value with pointers that SetValue replaced is released after the
// grace period (the record stays until its chunk goes), and the new one
// is not.
func TestSetValueReleasesTheOldValue(t *testing.T) {
	var ls leases
	d := reclaim.NewDomain()
	tb := newTable(t, Config[leaseVal]{Limit: 1000, Shards: 2, Domain: d})
	const n = 200
	for i := range n {
		tb.Insert(testKey(i), leaseVal{l: ls.make(i)})
	}
	worker := d.Register()
	for i := range n {
		e, _ := tb.Get(testKey(i))
		tb.SetValue(e, leaseVal{l: ls.make(n + i)})
	}
	worker.Quiescent()
	worker.Synchronize()
	worker.Unregister()
	if freed := ls.waitFreed(n); freed != n {
		t.Fatalf("%d of %d old values freed", freed, n)
	}
	for i := range n {
		if e, _ := tb.Get(testKey(i)); e == nil || e.Value().l == nil || e.Value().l.port != uint32(n+i) {
			t.Fatalf("flow %d lost its new value", i)
		}
	}
}

// wide is a value of several words, all equal: a reader that saw a mix of
// two values would see words that differ.
type wide [6]uint64

// SetValue racing with moves, lookups, counts and state swaps: every
// lookup sees one whole value, never a mix; no count and no state swap is
// lost; no flow leaves.
func TestSetValueUnderMovesLosesNothing(t *testing.T) {
	const flows = 256
	rounds := 300
	if raceEnabled {
		rounds = 60
	}
	d := reclaim.NewDomain()
	tb := newTable(t, Config[wide]{Limit: 10_000, Shards: 2, Domain: d})
	for i := range flows {
		tb.InsertPair(testKey(2*i), testKey(2*i+1), wide{})
	}
	var stop atomic.Bool
	var counted [flows]atomic.Uint64
	var swaps [flows]atomic.Uint64
	var torn atomic.Int64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			rd := d.Register()
			defer rd.Unregister()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for !stop.Load() {
				for range 64 {
					i := rng.IntN(flows)
					e, ok := tb.Get(testKey(2*i + rng.IntN(2)))
					if !ok {
						torn.Add(1 << 32) // a flow went missing
						continue
					}
					v := *e.Value()
					for _, x := range v {
						if x != v[0] {
							torn.Add(1)
						}
					}
					e.Count(1)
					counted[i].Add(1)
					if s := e.State(); e.CompareAndSwapState(s, s+1) {
						swaps[i].Add(1)
					}
				}
				rd.Quiescent()
			}
		})
	}
	// The writer: new values for every flow, and moves (compactions and
	// evacuations) in between.
	rng := rand.New(rand.NewPCG(1, 2))
	for r := range rounds {
		for range 32 {
			i := rng.IntN(flows)
			e, ok := tb.Get(testKey(2 * i))
			if !ok {
				t.Fatalf("flow %d missing", i)
			}
			x := uint64(r)<<20 | uint64(i)
			if _, ok := tb.SetValue(e, wide{x, x, x, x, x, x}); !ok {
				t.Fatalf("SetValue of flow %d failed", i)
			}
		}
		if r%10 == 0 {
			tb.CompactAll()
		}
	}
	stop.Store(true)
	wg.Wait()
	d.Synchronize()
	if n := torn.Load(); n != 0 {
		t.Fatalf("%d torn values, %d flows missing", n&(1<<32-1), n>>32)
	}
	for i := range flows {
		e, _ := tb.Get(testKey(2 * i))
		if e.Packets() != counted[i].Load() || uint64(e.State()) != swaps[i].Load() {
			t.Fatalf("flow %d: packets %d state %d; counted %d, swapped %d", i, e.Packets(), e.State(), counted[i].Load(), swaps[i].Load())
		}
	}
	if st := tb.Stats(); st.Live != flows || st.Inserts != flows || st.Moved == 0 {
		t.Fatalf("stats %v", st)
	}
	t.Log(fmt.Sprint(tb.Stats()))
}
