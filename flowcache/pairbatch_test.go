package flowcache

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// GetOrInsertPairBatch: each key's outcome (hit, inserted as a pair or a
// one-key flow, refused by make, full, closed), every key one lookup, a
// refusal that changes nothing, and pairs found under both keys.
func TestGetOrInsertPairBatch(t *testing.T) {
	var log causeLog
	d := reclaim.NewDomain()
	tb := newTable(t, Config[int]{Limit: 5, Shards: 4, Domain: d, OnRemove: log.fn})
	tb.InsertPair(testKey(1), testKey(101), 1) // found by its first key
	tb.InsertPair(testKey(2), testKey(102), 2) // found by its reply key
	keys := []FlowKey{
		testKey(1),   // hit
		testKey(102), // hit, through the reply key
		testKey(3),   // a pair
		testKey(4),   // refused by make
		testKey(5),   // a one-key flow (make returns the key itself)
		testKey(3),   // a copy of a key inserted earlier in the batch: a hit
		testKey(4),   // refused again: make is asked again
		testKey(6),   // a pair: the table is at its limit after it
		testKey(7),   // full: make does not run
	}
	var made []int
	mk := func(i int) (FlowKey, int, bool) {
		made = append(made, i)
		switch k := keys[i]; k {
		case testKey(4):
			return FlowKey{}, 0, false
		case testKey(5):
			return k, 500, true
		default:
			return k.Reverse(), 10 * i, true
		}
	}
	out := make([]*Entry[int], len(keys))
	res := make([]Outcome, len(keys))
	set := tb.GetOrInsertPairBatch(keys, mk, out, res)

	want := []Outcome{Hit, Hit, Inserted, Refused, Inserted, Hit, Refused, Inserted, Full}
	if !slices.Equal(res, want) {
		t.Fatalf("outcomes %v, want %v", res, want)
	}
	if !slices.Equal(made, []int{2, 3, 4, 6, 7}) {
		t.Fatalf("make ran for %v, want [2 3 4 6 7]", made)
	}
	if set != 6 {
		t.Fatalf("set %d, want 6", set)
	}
	for i, e := range out {
		if (e != nil) != (want[i] == Hit || want[i] == Inserted) {
			t.Fatalf("out[%d] = %v with outcome %v", i, e, res[i])
		}
	}
	if out[0] == nil || *out[0].Value() != 1 || out[1] == nil || *out[1].Value() != 2 || out[5] != out[2] {
		t.Fatalf("hits: %v %v, copy %v of %v", out[0], out[1], out[5], out[2])
	}
	// The pair is found under both keys; the one-key flow has no reply.
	if r, ok := tb.Get(testKey(3).Reverse()); !ok || r != out[2] {
		t.Fatalf("the pair's reply key finds %v, want %v", r, out[2])
	}
	if _, paired := out[4].Reply(); paired || *out[4].Value() != 500 {
		t.Fatalf("one-key flow: paired %v, value %d", paired, *out[4].Value())
	}
	st := tb.Stats()
	// Every key is one lookup: GetBatch ran before any insert, so it
	// missed the seven new keys (the copy of 3 found the flow in the
	// locked step, a miss all the same). The refusals took no unit of the
	// limit: 6 got in, and the table is exactly full.
	if st.Misses != 7 || st.Inserts != 2+3 || st.Live != 5 || st.Pairs != 4 || st.FullRejections != 1 {
		t.Fatalf("stats %v: want 7 misses, 5 inserts, 5 live (4 pairs), 1 full", st)
	}
	d.Synchronize()
	if n := log.total(); n != 0 {
		t.Fatalf("%d flows left", n)
	}
	tb.Close()
	res[0] = 0
	if tb.GetOrInsertPairBatch(keys[:1], mk, out, res); res[0] != Closed {
		t.Fatalf("after Close: %v", res[0])
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a short res did not panic")
		}
	}()
	tb.GetOrInsertPairBatch(keys, mk, out, res[:2])
}

// At the limit with Config.Evict, make runs only once a victim is chosen,
// and the victim leaves only if make accepts: a refusal keeps it.
func TestGetOrInsertPairBatchEvicts(t *testing.T) {
	var log causeLog
	d := reclaim.NewDomain()
	tb := newTable(t, Config[int]{Limit: 4, Shards: 1, Domain: d, OnRemove: log.fn,
		Evict: func(*Entry[int]) bool { return true }})
	for i := range 4 {
		tb.InsertPair(testKey(i), testKey(100+i), i)
	}
	out, res := make([]*Entry[int], 1), make([]Outcome, 1)
	refuse := func(int) (FlowKey, int, bool) { return FlowKey{}, 0, false }
	tb.GetOrInsertPairBatch([]FlowKey{testKey(50)}, refuse, out, res)
	if res[0] != Refused || tb.Stats().Evicted != 0 || tb.Len() != 4 {
		t.Fatalf("a refusal at the limit: %v, %v", res[0], tb.Stats())
	}
	accept := func(int) (FlowKey, int, bool) { return testKey(150), 50, true }
	tb.GetOrInsertPairBatch([]FlowKey{testKey(50)}, accept, out, res)
	if res[0] != Inserted || tb.Stats().Evicted != 1 || tb.Len() != 4 {
		t.Fatalf("an accepted flow at the limit: %v, %v", res[0], tb.Stats())
	}
	d.Synchronize()
	if log.total() != 1 {
		t.Fatalf("%d callbacks, want the victim's", log.total())
	}
}

// A reply key that names a flow already is replaced, as InsertPair does.
func TestGetOrInsertPairBatchReplacesReplyKeysFlow(t *testing.T) {
	var log causeLog
	d := reclaim.NewDomain()
	tb := newTable(t, Config[int]{Limit: 10, Shards: 4, Domain: d, OnRemove: log.fn})
	tb.InsertPair(testKey(60), testKey(61), 7)
	out, res := make([]*Entry[int], 1), make([]Outcome, 1)
	tb.GetOrInsertPairBatch([]FlowKey{testKey(1)}, func(int) (FlowKey, int, bool) { return testKey(61), 1, true }, out, res)
	if res[0] != Inserted || tb.Len() != 1 {
		t.Fatalf("%v, len %d", res[0], tb.Len())
	}
	if _, ok := tb.Get(testKey(60)); ok {
		t.Fatal("the replaced pair's other key is still there")
	}
	if e, _ := tb.Get(testKey(61)); e != out[0] {
		t.Fatal("the reply key does not find the new pair")
	}
	d.Synchronize()
	if got := log.of(7); !slices.Equal(got, []Cause{Replaced}) {
		t.Fatalf("the old pair left with %v", got)
	}
}

// shardIndexOf is the index of k's shard.
func (t *Table[V]) shardIndexOf(k FlowKey) int { return t.shardIndex(&k) }

// When the reply key's shard is below the key's and busy, the step cannot
// take it in order: it lets go and stores the pair in a write of its own,
// with the unit of the limit (or the victim's) it took, and the result is
// the same: one pair, Len at the limit, the victim evicted.
func TestGetOrInsertPairBatchReplyShardBusy(t *testing.T) {
	for _, atLimit := range []bool{false, true} {
		t.Run(fmt.Sprintf("atLimit=%v", atLimit), func(t *testing.T) {
			var log causeLog
			d := reclaim.NewDomain()
			tb := newTable(t, Config[int]{Limit: 8, Shards: 4, Seed: 3, Domain: d, OnRemove: log.fn,
				Evict: func(*Entry[int]) bool { return true }})
			// A key and a reply key in a lower shard.
			var k, r FlowKey
			for i := 1000; ; i++ {
				k, r = testKey(i), testKey(i+5000)
				if tb.shardIndexOf(r) < tb.shardIndexOf(k) {
					break
				}
			}
			if atLimit {
				// Fill k's shard and others with one-key flows, at the limit.
				for i := 0; tb.Len() < 8; i++ {
					tb.Insert(testKey(i), i)
				}
			}
			s := &tb.shards[tb.shardIndexOf(r)]
			s.Lock()
			go func() {
				time.Sleep(30 * time.Millisecond)
				s.Unlock()
			}()
			out, res := make([]*Entry[int], 1), make([]Outcome, 1)
			made := 0
			tb.GetOrInsertPairBatch([]FlowKey{k}, func(int) (FlowKey, int, bool) { made++; return r, 99, true }, out, res)
			if res[0] != Inserted || made != 1 {
				t.Fatalf("outcome %v, make ran %d times", res[0], made)
			}
			if e1, _ := tb.Get(k); e1 != out[0] {
				t.Fatal("the key does not find the pair")
			}
			if e2, _ := tb.Get(r); e2 != out[0] {
				t.Fatal("the reply key does not find the pair")
			}
			st := tb.Stats()
			wantLive, wantEvicted := 1, uint64(0)
			if atLimit {
				wantLive, wantEvicted = 8, 1
			}
			if st.Live != wantLive || st.Evicted != wantEvicted || st.Pairs != 1 || st.Replaced != 0 {
				t.Fatalf("stats %v", st)
			}
			d.Synchronize()
			if log.total() != int(wantEvicted) {
				t.Fatalf("%d callbacks", log.total())
			}
		})
	}
}

// The batch steps allocate nothing per batch, misses included: no closure
// per missing key (GetOrInsertBatch's make used to be wrapped in one), no
// outcome. (A new flow's record comes from its shard's chunk, one
// allocation per 511 records, and a shard's index grows now and then:
// under one allocation per batch.)
func TestBatchStepsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race sync.Pool drops what it is given, so xsync's striped counters allocate")
	}
	tb := newTable(t, Config[int]{Limit: 1 << 20, Shards: 4})
	const batch, fresh = 32, 8
	keys := make([]FlowKey, batch)
	for i := range keys[fresh:] {
		keys[fresh+i] = testKey(i)
		tb.Insert(testKey(i), i)
	}
	next := 1 << 16
	out, res := make([]*Entry[int], batch), make([]Outcome, batch)
	mkOne := func(i int) int { return i }
	mkPair := func(i int) (FlowKey, int, bool) { return keys[i].Reverse(), i, i%4 != 0 }
	for _, step := range []struct {
		name string
		run  func()
	}{
		{"GetOrInsertBatch", func() { tb.GetOrInsertBatch(keys, mkOne, out) }},
		{"GetOrInsertPairBatch", func() { tb.GetOrInsertPairBatch(keys, mkPair, out, res) }},
	} {
		if a := testing.AllocsPerRun(500, func() {
			for i := range fresh { // new keys each batch: misses, inserted or refused
				keys[i] = testKey(next)
				next++
			}
			step.run()
		}); a != 0 {
			t.Errorf("%s allocates %v times per batch of %d keys, %d of them new", step.name, a, batch, fresh)
		}
	}
	full := newTable(t, Config[int]{Limit: 1})
	full.Insert(testKey(1), 1)
	if a := testing.AllocsPerRun(500, func() { full.GetOrInsertPairBatch(keys, mkPair, out, res) }); a != 0 {
		t.Errorf("a batch refused at the limit allocates %v times", a)
	}
}

// Workers running pair batches over the same keys at once, at the limit
// with eviction: every flow is one pair under both keys, Len never passes
// the limit, and every flow make accepted is either live at the end or
// was called back exactly once.
func TestGetOrInsertPairBatchConcurrent(t *testing.T) {
	const limit, workers, rounds = 64, 4, 200
	var mu sync.Mutex
	accepted := map[int]int{} // value -> times make accepted it
	var log causeLog
	d := reclaim.NewDomain()
	tb := newTable(t, Config[int]{Limit: limit, Shards: 4, Domain: d, OnRemove: log.fn,
		Evict: func(*Entry[int]) bool { return true }})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rd := d.Register()
			defer rd.Unregister()
			keys := make([]FlowKey, 16)
			out, res := make([]*Entry[int], 16), make([]Outcome, 16)
			for r := range rounds {
				for i := range keys {
					keys[i] = testKey((r*7 + i*13 + w) % 300)
				}
				tb.GetOrInsertPairBatch(keys, func(i int) (FlowKey, int, bool) {
					v := w<<24 | r<<8 | i
					mu.Lock()
					accepted[v]++
					mu.Unlock()
					return testKey(1000 + (r*7+i*13+w)%300), v, true
				}, out, res)
				if n := tb.Len(); n > limit {
					t.Errorf("Len %d over the limit", n)
					return
				}
				rd.Quiescent()
			}
		})
	}
	wg.Wait()
	live := map[int]bool{}
	for e := range tb.All() {
		live[*e.Value()] = true
		r, ok := e.Reply()
		if g, _ := tb.Get(r); !ok || g != e {
			t.Fatalf("flow %d is not one pair under both keys", *e.Value())
		}
	}
	d.Synchronize()
	for v, n := range accepted {
		if n != 1 {
			t.Fatalf("make accepted %d %d times", v, n)
		}
		if calls := len(log.of(v)); calls+map[bool]int{true: 1}[live[v]] != 1 {
			t.Fatalf("flow %d: live %v and %d callbacks", v, live[v], calls)
		}
	}
}
