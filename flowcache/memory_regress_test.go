package flowcache

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/reclaim"
	"pgregory.net/rapid"
)

// Go's own sync.Map test for golang/go#40999, run against the table: a
// value removed from the map must become collectable, with nothing else
// happening (no Reclaimer, no Synchronize).
func TestIssue40999(t *testing.T) {
	for _, worker := range []bool{false, true} {
		t.Run(fmt.Sprintf("worker=%v", worker), func(t *testing.T) {
			d := reclaim.NewDomain()
			cfg := Config[*int]{Limit: 1 << 20, Domain: d}
			var r *reclaim.Reader
			if worker {
				// A registered worker and an OnRemove: the release waits for
				// a grace period, which the table's pending bound brings on
				// without a tick.
				r = d.Register()
				defer r.Unregister()
				cfg.OnRemove = func(*Entry[*int], Cause) {}
			}
			tb := newTable(t, cfg)
			var cleanedUp atomic.Uint32
			for i := 0; cleanedUp.Load() == 0; i++ {
				if i > 100_000 {
					t.Fatal("no removed value was ever collected")
				}
				p := new(int)
				runtime.AddCleanup(p, func(c *atomic.Uint32) { c.Add(1) }, &cleanedUp)
				k := NewFlowKey(addr(uint32(uintptr(unsafe.Pointer(p)))), addr(uint32(uintptr(unsafe.Pointer(p))>>32)), 1, 2, ProtoUDP)
				if _, err := tb.Insert(k, p); err != nil {
					t.Fatal(err)
				}
				tb.Remove(k)
				if worker {
					r.Quiescent()
					if i%64 != 0 {
						continue // a collection every 64 flows: the release waits for the bound
					}
				}
				runtime.GC()
			}
		})
	}
}

// Regression (issue 16): a pair whose keys lie in two shards left a
// foreign entry pointing at its old reply record, which kept the record's
// chunk — after Clear, the whole old storage — reachable: 80 % of the
// peak heap stayed in use. Clearing the entry gives it all back.
func TestMemoryPairsLeaveNothingPinned(t *testing.T) {
	flows := 100_000
	if raceEnabled || testing.Short() {
		flows = 20_000
	}
	for _, how := range []string{"clear", "remove+pass"} {
		t.Run(how, func(t *testing.T) {
			d := reclaim.NewDomain()
			base := heapInuse()
			tb, err := New(Config[[16]byte]{Limit: flows, Shards: 16, Domain: d})
			if err != nil {
				t.Fatal(err)
			}
			for i := range flows {
				if _, err := tb.InsertPair(testKey(i), replyKey(i), [16]byte{}); err != nil {
					t.Fatal(err)
				}
			}
			peak := heapInuse() - base
			if how == "clear" {
				tb.Clear()
			} else {
				for i := range flows {
					tb.Remove(testKey(i))
				}
				tb.Expire(time.UnixMilli(tb.CoarseNow()))
			}
			d.Synchronize()
			after := heapInuse() - base
			t.Logf("heap in use %d B with %d pairs, %d B after %s: %.1f %%", peak, flows, after, how, 100*float64(after)/float64(peak))
			if !raceEnabled && float64(after) > 0.10*float64(peak) {
				t.Errorf("after %s the table holds %.1f %% of its peak heap in use; want at most 10 %%", how, 100*float64(after)/float64(peak))
			}
			runtime.KeepAlive(tb)
		})
	}
}

// Regression (issue 16): after the clock steps back, a hit lowers its
// flow's last-seen time, and the stamp the pass trusts must follow it
// (a stamp may be early, never late). A lookup that straddled a rebuild
// lowered the stamp in the old array only, and a compaction's fold kept
// the later time: a flow inserted at t0+100 s and hit at t0 lived about
// 100 s past its timeout.
func TestStampHealedAfterClockStepsBack(t *testing.T) {
	for _, move := range []string{"rebuild", "compaction"} {
		t.Run(move, func(t *testing.T) {
			clk := newFakeClock()
			t0 := clk.Now()
			tb := newTable(t, Config[int]{Limit: 100, TTL: 10 * time.Second, Clock: clk.Now})
			tb.Expire(t0.Add(100 * time.Second)) // the clock runs ahead…
			k := testKey(1)
			if _, err := tb.Insert(k, 1); err != nil {
				t.Fatal(err)
			}
			tb.Expire(t0) // …and steps back
			// A lookup that finds the flow in the current array and
			// refreshes it after a rebuild or a compaction replaced it.
			h := tb.hash(&k)
			e, slot, w := tb.shardOf(h).Lookup(h, skey(&k))
			if move == "rebuild" {
				tb.RebuildAll()
			} else {
				tb.CompactAll()
			}
			if !tb.touch(e, slot, w) {
				t.Fatal("refresh refused a live flow")
			}
			if got, _ := tb.Get(k); got.LastSeen().UnixMilli() != t0.UnixMilli() {
				t.Fatalf("last seen %v, want %v", got.LastSeen(), t0)
			}
			if res := tb.Expire(t0.Add(9 * time.Second)); res.Expired != 0 {
				t.Fatal("expired before its timeout")
			}
			if res := tb.Expire(t0.Add(10 * time.Second)); res.Expired != 1 {
				t.Fatalf("a flow last seen at t0 with a 10 s timeout is still there at t0+10 s (expired %d)", res.Expired)
			}
		})
	}
}

// Regression (issue 16): a refresh that lands on a flow's old copy after a
// move (a lookup that found the flow just before) reaches the flow's new
// home, whether or not the reader is registered. With no Reader the fold
// ran at once, before the late refresh, which was lost: a flow looked up
// at t0+8 s with a 10 s TTL expired at t0+12 s.
func TestRefreshLandsAcrossMove(t *testing.T) {
	for _, worker := range []bool{false, true} {
		t.Run(fmt.Sprintf("worker=%v", worker), func(t *testing.T) {
			clk := newFakeClock()
			t0 := clk.Now()
			d := reclaim.NewDomain()
			tb := newTable(t, Config[int]{Limit: 100, TTL: 10 * time.Second, Clock: clk.Now, Domain: d})
			if worker {
				r := d.Register()
				defer r.Unregister()
			}
			k := testKey(1)
			if _, err := tb.Insert(k, 1); err != nil {
				t.Fatal(err)
			}
			tb.Expire(t0.Add(8 * time.Second))
			h := tb.hash(&k)
			e, slot, w := tb.shardOf(h).Lookup(h, skey(&k))
			tb.CompactAll() // moves the flow; e is its old copy now
			if e.home() == e {
				t.Fatal("the compaction did not move the flow")
			}
			tb.touch(e, slot, w)
			if res := tb.Expire(t0.Add(12 * time.Second)); res.Expired != 0 {
				t.Fatal("a flow looked up at t0+8 s with a 10 s TTL expired at t0+12 s")
			}
			if got, _ := tb.Get(k); got == nil || got.LastSeen().UnixMilli() != t0.Add(12*time.Second).UnixMilli() {
				t.Fatalf("flow %v after the pass", got)
			}
		})
	}
}

// A lookup from a goroutine that never registered a Reader can still reach
// a removed flow's record through a slot word it loaded before the removal.
// Once that record's value is released (zeroed), the lookup must not return
// it: the release marks last seen first, and the refresh looks again.
func TestLookupSkipsReleasedRecord(t *testing.T) {
	tb := newTable(t, Config[*int]{Limit: 100})
	k := testKey(1)
	v := new(int)
	if _, err := tb.Insert(k, v); err != nil {
		t.Fatal(err)
	}
	h := tb.hash(&k)
	e, slot, w := tb.shardOf(h).Lookup(h, skey(&k))
	tb.Expire(time.UnixMilli(tb.CoarseNow() + 2000)) // the next hit refreshes
	tb.Remove(k)                                     // no Reader, no OnRemove: released at once
	if e.lastSeen.Load() != releasedMark || *e.Value() != nil {
		t.Fatalf("removed flow not released: last seen %d, value %v", e.lastSeen.Load(), *e.Value())
	}
	if tb.touch(e, slot, w) {
		t.Fatal("a stale lookup's refresh accepted a released record")
	}
	if e.lastSeen.Load() != releasedMark {
		t.Fatal("the refresh overwrote the release mark")
	}
	if got := tb.lookupLive(&k, h); got != nil {
		t.Fatal("lookupLive returned a removed flow")
	}
	if _, err := tb.Insert(k, v); err != nil {
		t.Fatal(err)
	}
	if got, ok := tb.Get(k); !ok || got == e || *got.Value() != v {
		t.Fatal("the key's new flow was not found")
	}
}

// Regression (issue 16): work waiting for a grace period — folds of
// evacuated chunks, OnRemove of flows that left — was run only by the
// Reclaimer's tick, so between ticks it grew with the churn. Past the
// table's pending bound a writer asks the domain to reclaim what is due,
// so it stays bounded with no tick at all while workers pass quiescent
// points.
func TestPendingBoundedWithoutTick(t *testing.T) {
	const live = 20_000
	cycles := 300_000
	if raceEnabled || testing.Short() {
		cycles = 60_000
	}
	d := reclaim.NewDomain()
	var called atomic.Int64
	tb := newTable(t, Config[[16]byte]{Limit: live, Shards: 16, Domain: d,
		OnRemove: func(*Entry[[16]byte], Cause) { called.Add(1) }})
	r := d.Register()
	defer r.Unregister()
	for i := range live {
		tb.Insert(testKey(i), [16]byte{})
	}
	worst := int64(0)
	x := uint64(1)
	for c := range cycles {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		j := int(x % live)
		tb.Remove(testKey(j))
		tb.Insert(testKey(j), [16]byte{})
		if c%32 == 31 {
			r.Quiescent()
		}
		worst = max(worst, tb.Stats().PendingBytes)
	}
	limit := tb.pendingLimit()
	t.Logf("%d cycles: pending peaked at %d B (bound %d B); %d OnRemove calls without a tick; %d deferred functions run", cycles, worst, limit, called.Load(), d.Stats().Run)
	if called.Load() < int64(cycles)/2 {
		t.Errorf("only %d of %d removals were called back without a tick", called.Load(), cycles)
	}
	// A writer reclaims once past the bound; what it cannot yet reclaim
	// (deferred since the workers' last quiescent point) stays for the
	// next: at most a batch's worth of writes over the bound.
	if worst > 2*limit {
		t.Errorf("pending bytes peaked at %d, over twice the bound %d", worst, limit)
	}
}

// The storage's bound (invariant 16 in docs/DESIGN.md), as a property:
// whatever the order of inserts, pairs, removals, replacements, evictions,
// expiries, class changes and clears, every shard holds at most 2 × its
// live records + one chunk after every operation, and the table holds
// exactly the flows a model says it does.
func TestStorageBoundProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		clk := newFakeClock()
		limit := rapid.IntRange(1, 3000).Draw(rt, "limit")
		evict := rapid.Bool().Draw(rt, "evict")
		cfg := Config[int]{Limit: limit, Shards: 1 << rapid.IntRange(0, 3).Draw(rt, "shardBits"),
			TTL: 10 * time.Second, Timeouts: []time.Duration{time.Second}, Clock: clk.Now}
		if evict {
			cfg.Evict = func(*Entry[int]) bool { return true }
		}
		cfg.Domain = reclaim.NewDomain()
		tb, err := New(cfg)
		if err != nil {
			rt.Fatal(err)
		}
		defer tb.Close()
		keys := rapid.IntRange(1, 4000).Draw(rt, "keys")
		ops := rapid.IntRange(1, 3000).Draw(rt, "ops")
		seed := rapid.Uint64().Draw(rt, "seed")
		x := seed | 1
		next := func(n int) int {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			return int(x % uint64(n))
		}
		for op := range ops {
			i := next(keys)
			var what string
			switch r := next(100); {
			case r < 40:
				what = "insert"
				tb.Insert(testKey(i), i)
			case r < 55:
				what = "pair"
				tb.InsertPair(testKey(i), testKey(next(keys)).Reverse(), i)
			case r < 85:
				what = "remove"
				tb.Remove(testKey(i))
			case r < 90:
				what = "class"
				if e, ok := tb.Get(testKey(i)); ok {
					tb.SetClass(e, next(2))
				}
			case r < 99:
				what = "expire"
				tb.Expire(clk.Advance(time.Duration(next(4000)) * time.Millisecond))
			default:
				what = "clear"
				tb.Clear()
			}
			checkBound(rt, tb, fmt.Sprintf("op %d (%s)", op, what))
			if n := tb.Len(); n > limit {
				rt.Fatalf("op %d (%s): %d flows over the limit %d", op, what, n, limit)
			}
			held, live := int64(0), int64(0)
			for s := range tb.shards {
				h, l := tb.shards[s].Records()
				held, live = held+h, live+l
			}
			st := tb.Stats()
			if st.RecordsHeld != held || st.RecordsLive != live || live != int64(st.Live+st.Pairs) {
				rt.Fatalf("op %d (%s): Stats records %d held %d live, shards %d %d, flows %d pairs %d",
					op, what, st.RecordsHeld, st.RecordsLive, held, live, st.Live, st.Pairs)
			}
		}
	})
}

// addr is an IPv4 address from a number.
func addr(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
