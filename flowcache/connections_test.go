package flowcache

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// causeLog records OnRemove calls: per flow value, the causes it left with.
type causeLog struct {
	mu  sync.Mutex
	got map[int][]Cause
}

func (c *causeLog) fn(e *Entry[int], why Cause) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got == nil {
		c.got = map[int][]Cause{}
	}
	c.got[*e.Value()] = append(c.got[*e.Value()], why)
}

func (c *causeLog) of(v int) []Cause {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got[v])
}

func (c *causeLog) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, cs := range c.got {
		n += len(cs)
	}
	return n
}

// A pair is one flow under two keys: Get of either finds it, it counts
// once, Remove of either removes both, and it is called back once. Keys
// that hash to one shard and keys that hash to two are both covered (with
// 8 shards most pairs straddle two).
func TestPairIsOneFlow(t *testing.T) {
	d := reclaim.NewDomain()
	var log causeLog
	tb := newTable(t, Config[int]{Limit: 1000, Shards: 8, Domain: d, OnRemove: log.fn})
	same, cross := 0, 0
	for i := range 200 {
		k, r := testKey(2*i), testKey(2*i+1)
		if tb.shardIndex(&k) == tb.shardIndex(&r) {
			same++
		} else {
			cross++
		}
		e, err := tb.InsertPair(k, r, i)
		if err != nil {
			t.Fatal(err)
		}
		if rk, ok := e.Reply(); !ok || rk != r || e.Key() != k {
			t.Fatalf("pair %d: Key %v, Reply %v %v", i, e.Key(), rk, ok)
		}
	}
	if same == 0 || cross == 0 {
		t.Fatalf("want pairs in one shard and across two: %d, %d", same, cross)
	}
	if tb.Len() != 200 || tb.Stats().Pairs != 200 {
		t.Fatalf("Len %d, Pairs %d; want 200 each", tb.Len(), tb.Stats().Pairs)
	}
	for i := range 200 {
		a, ok1 := tb.Get(testKey(2 * i))
		b, ok2 := tb.Get(testKey(2*i + 1))
		if !ok1 || !ok2 || a != b || *a.Value() != i {
			t.Fatalf("pair %d: Get of its keys gives %p, %p", i, a, b)
		}
	}
	rows := tb.Dump()
	if len(rows) != 200 {
		t.Fatalf("Dump: %d rows, want one per pair", len(rows))
	}
	for _, r := range rows {
		if !r.Paired || r.Key != testKey(2*r.Value) || r.Reply != testKey(2*r.Value+1) {
			t.Fatalf("Dump row %+v", r)
		}
	}
	n := 0
	for range tb.All() {
		n++
	}
	if n != 200 {
		t.Fatalf("All: %d flows, want 200", n)
	}
	// Remove by either key removes both.
	for i := range 200 {
		k := testKey(2*i + i%2) // the first key for even i, the reply for odd
		if !tb.Remove(k) {
			t.Fatalf("Remove pair %d", i)
		}
		if _, ok := tb.Get(testKey(2 * i)); ok {
			t.Fatalf("pair %d: first key still found", i)
		}
		if _, ok := tb.Get(testKey(2*i + 1)); ok {
			t.Fatalf("pair %d: reply key still found", i)
		}
	}
	d.Synchronize()
	if tb.Len() != 0 || tb.Stats().Pairs != 0 || log.total() != 200 {
		t.Fatalf("after removing: Len %d, Pairs %d, callbacks %d", tb.Len(), tb.Stats().Pairs, log.total())
	}
	for i := range 200 {
		if got := log.of(i); !slices.Equal(got, []Cause{Removed}) {
			t.Fatalf("pair %d: causes %v", i, got)
		}
	}
}

// InsertPair of keys already present replaces the flows that hold them,
// whole: a pair replaced through one key loses its other key too, and
// each replaced flow is called back once with Replaced.
func TestPairReplacesWhole(t *testing.T) {
	d := reclaim.NewDomain()
	var log causeLog
	tb := newTable(t, Config[int]{Limit: 100, Shards: 4, Domain: d, OnRemove: log.fn})
	a, b, c, x := testKey(1), testKey(2), testKey(3), testKey(4)
	tb.InsertPair(a, b, 1) // flow 1: a, b
	tb.Insert(c, 2)        // flow 2: c
	tb.InsertPair(x, c, 3) // replaces flow 2 (its key c)
	if e, _ := tb.Get(c); *e.Value() != 3 {
		t.Fatal("c does not find the new pair")
	}
	tb.InsertPair(b, x, 4) // replaces flow 1 (through b) and flow 3 (through x)
	for _, k := range []FlowKey{a, c} {
		if _, ok := tb.Get(k); ok {
			t.Fatalf("%v: key of a replaced pair still found", k)
		}
	}
	e1, _ := tb.Get(b)
	e2, _ := tb.Get(x)
	if e1 == nil || e1 != e2 || *e1.Value() != 4 || tb.Len() != 1 {
		t.Fatalf("after replacing two pairs: %v %v, len %d", e1, e2, tb.Len())
	}
	// Insert of one key of a pair replaces the pair with a one-key flow.
	tb.Insert(x, 5)
	if _, ok := tb.Get(b); ok || tb.Len() != 1 || tb.Stats().Pairs != 0 {
		t.Fatalf("one-key insert over a pair: b found %v, len %d, pairs %d", ok, tb.Len(), tb.Stats().Pairs)
	}
	// k == reply is a one-key flow.
	e, _ := tb.InsertPair(a, a, 6)
	if _, ok := e.Reply(); ok || tb.Len() != 2 {
		t.Fatalf("InsertPair(a, a): paired %v, len %d", ok, tb.Len())
	}
	d.Synchronize()
	for v := 1; v <= 4; v++ {
		if got := log.of(v); !slices.Equal(got, []Cause{Replaced}) {
			t.Fatalf("flow %d: causes %v, want [replaced]", v, got)
		}
	}
	st := tb.Stats()
	if st.Replaced != 4 || st.Inserts != 6 || st.Live != 2 {
		t.Fatalf("stats %v", st)
	}
}

// GetOrInsertPair returns the flow under either key, or inserts a pair
// once; make runs at most once.
func TestGetOrInsertPair(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100, Shards: 4})
	k, r := testKey(10), testKey(11)
	calls := 0
	mk := func() int { calls++; return 7 }
	e, ins, err := tb.GetOrInsertPair(k, r, mk)
	if err != nil || !ins || *e.Value() != 7 {
		t.Fatalf("first: %v %v %v", e, ins, err)
	}
	for _, ks := range [][2]FlowKey{{k, r}, {r, k}, {r, testKey(12)}} {
		got, ins, err := tb.GetOrInsertPair(ks[0], ks[1], mk)
		if err != nil || ins || got != e {
			t.Fatalf("GetOrInsertPair(%v, %v) = %p %v %v, want the pair", ks[0], ks[1], got, ins, err)
		}
	}
	if calls != 1 || tb.Len() != 1 {
		t.Fatalf("make ran %d times, len %d", calls, tb.Len())
	}
	st := tb.Stats()
	if st.Hits+st.Misses == 0 || st.Misses != 1 {
		t.Fatalf("GetOrInsertPair counts one lookup each: %v", st)
	}
}

// A pair expires once, as one flow, through the pass over its first key's
// shard, whether or not its reply key lies in the same shard; Get of its
// reply key keeps it alive.
func TestPairExpiresOnce(t *testing.T) {
	d := reclaim.NewDomain()
	clk := newFakeClock()
	t0 := clk.Now()
	var log causeLog
	tb := newTable(t, Config[int]{Limit: 1000, Shards: 8, TTL: 10 * time.Second, Clock: clk.Now, Domain: d, OnRemove: log.fn})
	for i := range 100 {
		tb.InsertPair(testKey(2*i), testKey(2*i+1), i)
	}
	tb.Expire(t0.Add(5 * time.Second))
	for i := range 50 {
		tb.Get(testKey(2*i + 1)) // the reply direction only
	}
	if res := tb.Expire(t0.Add(10 * time.Second)); res.Expired != 50 {
		t.Fatalf("at 10 s: expired %d, want the 50 idle pairs", res.Expired)
	}
	if res := tb.Expire(t0.Add(15 * time.Second)); res.Expired != 50 || tb.Len() != 0 {
		t.Fatalf("at 15 s: expired %d, len %d", res.Expired, tb.Len())
	}
	d.Synchronize()
	for i := range 100 {
		if got := log.of(i); !slices.Equal(got, []Cause{Expired}) {
			t.Fatalf("pair %d: causes %v", i, got)
		}
		if _, ok := tb.Get(testKey(2*i + 1)); ok {
			t.Fatalf("pair %d: reply key outlived the pair", i)
		}
	}
}

// Every way out has its cause, and Stats counts each exactly.
func TestEveryCause(t *testing.T) {
	d := reclaim.NewDomain()
	clk := newFakeClock()
	var log causeLog
	tb := newTable(t, Config[int]{
		Limit: 3, TTL: 10 * time.Second, Clock: clk.Now, Domain: d, OnRemove: log.fn,
		Evict: func(e *Entry[int]) bool { return *e.Value() == 3 },
	})
	tb.Insert(testKey(1), 1)
	tb.Insert(testKey(1), 2) // 1 replaced
	tb.Insert(testKey(2), 3)
	tb.Insert(testKey(3), 4)
	tb.Insert(testKey(4), 5) // at the limit: 3 evicted
	tb.Remove(testKey(3))    // 4 removed
	tb.Expire(clk.Advance(10 * time.Second))
	tb.Insert(testKey(5), 6)
	tb.Clear() // 6 cleared
	d.Synchronize()
	want := map[int]Cause{1: Replaced, 3: Evicted, 4: Removed, 2: Expired, 5: Expired, 6: Cleared}
	for v, c := range want {
		if got := log.of(v); !slices.Equal(got, []Cause{c}) {
			t.Errorf("flow %d: causes %v, want [%v]", v, got, c)
		}
	}
	st := tb.Stats()
	if st.Replaced != 1 || st.Evicted != 1 || st.Removed != 1 || st.Expired != 2 || st.Cleared != 1 || st.Inserts != 6 || st.Live != 0 {
		t.Fatalf("stats %v", st)
	}
	names := map[Cause]string{Expired: "expired", Removed: "removed", Replaced: "replaced", Evicted: "evicted", Cleared: "cleared", 0: "cause(0)"}
	for c, s := range names {
		if c.String() != s {
			t.Errorf("Cause(%d).String() = %q, want %q", c, c.String(), s)
		}
	}
}

// Eviction at the limit: the flow idle longest among those Evict approves
// leaves, in the same step as the new flow comes in; with none approved
// in reach the insert fails with ErrFull and changes nothing. Len never
// passes Limit.
func TestEvictAtLimit(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Now()
	const limit = 64
	tb := newTable(t, Config[int]{
		Limit: limit, Shards: 1, TTL: time.Hour, Clock: clk.Now,
		Evict: func(e *Entry[int]) bool { return *e.Value()%2 == 1 }, // odd values may go
	})
	for i := range limit {
		tb.Expire(t0.Add(time.Duration(i) * time.Second)) // each flow a second younger
		if _, err := tb.Insert(testKey(i), i); err != nil {
			t.Fatal(err)
		}
	}
	// The table has one shard of 64 keys, so the 64-slot scan from the new
	// key's bucket reaches some of them; the oldest odd flow in reach goes.
	e, err := tb.Insert(testKey(1000), 1000)
	if err != nil || tb.Len() != limit {
		t.Fatalf("insert at the limit: %v, len %d", err, tb.Len())
	}
	gone := -1
	for i := range limit {
		if _, ok := tb.Get(testKey(i)); !ok {
			if gone >= 0 {
				t.Fatal("two flows left for one insert")
			}
			gone = i
		}
	}
	if gone < 0 || gone%2 == 0 {
		t.Fatalf("evicted flow %d: want an odd one", gone)
	}
	if st := tb.Stats(); st.Evicted != 1 || st.FullRejections != 0 || e == nil {
		t.Fatalf("stats %v", st)
	}
	// Fill the table with even (protected) flows only: ErrFull, nothing
	// changes.
	tb.Clear()
	for i := range limit {
		tb.Insert(testKey(2*i), 2*i)
	}
	before := tb.Dump()
	if _, err := tb.Insert(testKey(5000), 5001); !errors.Is(err, ErrFull) {
		t.Fatalf("no flow to evict: %v, want ErrFull", err)
	}
	if _, _, err := tb.GetOrInsert(testKey(5000), func() int { t.Fatal("make ran"); return 0 }); !errors.Is(err, ErrFull) {
		t.Fatalf("GetOrInsert with no flow to evict: %v", err)
	}
	after := tb.Dump()
	if len(after) != len(before) || tb.Len() != limit {
		t.Fatal("a refused insert changed the table")
	}
}

// conntrack's early drop, on a flood: a table at its limit whose
// established flows are "assured" takes a flood of four times its limit in
// new, unanswered flows. New flows keep getting in by evicting unanswered
// ones; no assured flow is ever evicted.
func TestEvictFloodSparesAssured(t *testing.T) {
	const (
		limit   = 20_000
		assured = 1
	)
	established := limit / 2
	flood := 4 * limit
	if testing.Short() || raceEnabled {
		flood = limit
	}
	tb := newTable(t, Config[int]{
		Limit: limit,
		Evict: func(e *Entry[int]) bool { return e.State()&assured == 0 },
	})
	for i := range established {
		e, err := tb.Insert(testKey(i), i)
		if err != nil {
			t.Fatal(err)
		}
		e.CompareAndSwapState(0, assured) // it saw a reply
	}
	admitted, refused := 0, 0
	for i := range flood {
		_, err := tb.Insert(testKey(established+i), -1)
		switch {
		case err == nil:
			admitted++
		case errors.Is(err, ErrFull):
			refused++
		default:
			t.Fatal(err)
		}
		if tb.Len() > limit {
			t.Fatalf("Len %d over the limit", tb.Len())
		}
	}
	for i := range established {
		if e, ok := tb.Get(testKey(i)); !ok || e.State() != assured {
			t.Fatalf("assured flow %d evicted", i)
		}
	}
	st := tb.Stats()
	t.Logf("flood of %d at limit %d: admitted %d, refused %d, evicted %d", flood, limit, admitted, refused, st.Evicted)
	if admitted < flood*9/10 || st.Evicted != uint64(admitted-(limit-established)) {
		t.Fatalf("admitted %d of %d, evicted %d", admitted, flood, st.Evicted)
	}
}

// The limit holds when every insert at the limit replaces or evicts:
// the unit of the flow that leaves passes straight to the one that comes
// in, so inserts into other shards never slip in between. Several
// goroutines insert new keys (evicting), re-insert present keys
// (replacing) and pairs over one-key flows, while one watches Len.
func TestLimitExactUnderEvictionAndReplacement(t *testing.T) {
	const limit = 2000
	tb := newTable(t, Config[int]{Limit: limit, Shards: 8, Evict: func(*Entry[int]) bool { return true }})
	var wg sync.WaitGroup
	var over atomic.Int64
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := tb.Len(); n > limit {
				over.Store(int64(n))
			}
		}
	})
	ops := 100_000
	if raceEnabled || testing.Short() {
		ops = 20_000
	}
	var workers sync.WaitGroup
	for g := range 3 {
		workers.Go(func() {
			for i := range ops {
				k := testKey(g<<20 | i%3000)
				switch i % 3 {
				case 0:
					tb.GetOrInsert(k, func() int { return i })
				case 1:
					tb.Insert(k, i)
				default:
					tb.InsertPair(k, testKey(g<<20|(i+7)%3000), i)
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	if n := over.Load(); n != 0 || tb.Len() > limit {
		t.Fatalf("Len reached %d (now %d), over the limit of %d", n, tb.Len(), limit)
	}
	st := tb.Stats()
	if int64(st.Live) != int64(st.Inserts)-int64(st.Replaced+st.Evicted+st.Removed+st.Expired+st.Cleared) {
		t.Fatalf("Live is not Inserts minus every cause: %v", st)
	}
}
