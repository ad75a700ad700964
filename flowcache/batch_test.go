package flowcache

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// GetBatch gives what Get gives key by key, for hits, misses, chunks of
// every size and a short out slice.
func TestGetBatchMatchesGet(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100_000, Shards: 4})
	for i := 0; i < 20_000; i += 2 {
		tb.Insert(testKey(i), i)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 31, 32, 33, 64, 100, 1000} {
		keys := make([]FlowKey, n)
		for i := range keys {
			keys[i] = testKey(r.IntN(20_000))
		}
		out := make([]*Entry[int], n+3)
		for i := range out {
			out[i] = &Entry[int]{} // stale garbage GetBatch must overwrite
		}
		hits := tb.GetBatch(keys, out)
		want := 0
		for i, k := range keys {
			e, ok := tb.Get(k)
			if ok {
				want++
			}
			if out[i] != e {
				t.Fatalf("n=%d: out[%d] = %v, Get gives %v", n, i, out[i], e)
			}
		}
		if hits != want {
			t.Fatalf("n=%d: %d hits, want %d", n, hits, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("GetBatch with a short out did not panic")
		}
	}()
	tb.GetBatch(make([]FlowKey, 4), make([]*Entry[int], 3))
}

func TestGetBatchAllocatesNothing(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 1000})
	keys := make([]FlowKey, 64)
	for i := range keys {
		keys[i] = testKey(i)
		if i%3 != 0 {
			tb.Insert(keys[i], i)
		}
	}
	out := make([]*Entry[int], len(keys))
	if a := testing.AllocsPerRun(1000, func() { tb.GetBatch(keys, out) }); a != 0 {
		t.Fatalf("GetBatch allocates %v times", a)
	}
}

// Under -race: batches of stable keys never miss while writers insert,
// remove and rebuild around them.
func TestGetBatchConcurrentWithWriters(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100_000, Shards: 2})
	const stable = 2000
	keys := make([]FlowKey, stable)
	for i := range keys {
		keys[i] = testKey(i)
		tb.Insert(keys[i], i)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		r := rand.New(rand.NewPCG(3, 4))
		for it := 0; ; it++ {
			select {
			case <-stop:
				return
			default:
			}
			k := testKey(stable + r.IntN(5000))
			if !tb.Remove(k) {
				tb.Insert(k, it)
			}
			if it%700 == 0 {
				tb.RebuildAll()
			}
		}
	})
	out := make([]*Entry[int], stable)
	for range 200 {
		if hits := tb.GetBatch(keys, out); hits != stable {
			close(stop)
			wg.Wait()
			t.Fatalf("batch of present keys: %d hits of %d", hits, stable)
		}
		for i, e := range out {
			if *e.Value() != i {
				t.Fatalf("out[%d] has value %d", i, *e.Value())
			}
		}
	}
	close(stop)
	wg.Wait()
}

// A short out panics whatever its capacity: GetBatch must not write past
// len(out) into memory the caller did not hand it.
func TestGetBatchShortOutPanicsWhateverCap(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100})
	for i := range 8 {
		tb.Insert(testKey(i), i)
	}
	keys := []FlowKey{testKey(0), testKey(1), testKey(2), testKey(3)}
	backing := make([]*Entry[int], 8)
	defer func() {
		if recover() == nil {
			t.Fatal("GetBatch with len(out) < len(keys) did not panic")
		}
		for i, e := range backing {
			if e != nil {
				t.Fatalf("GetBatch wrote backing[%d] past len(out)", i)
			}
		}
	}()
	tb.GetBatch(keys, backing[:2])
}

// Hits are sampled on every lookup path; Stats.Hits after GetBatch must
// estimate the true count (it used never to count a batch hit at all).
func TestGetBatchCountsHits(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10_000})
	keys := make([]FlowKey, 1000)
	for i := range keys {
		keys[i] = testKey(i)
		tb.Insert(keys[i], i)
	}
	out := make([]*Entry[int], len(keys))
	const rounds = 200
	for range rounds {
		tb.GetBatch(keys, out)
	}
	st := tb.Stats()
	// 200 000 hits sampled one in 64: about 3125 samples, so the estimate
	// is within ±10 % (over 5 standard deviations) but for bad luck.
	want := float64(rounds * len(keys))
	if got := float64(st.Hits); got < 0.9*want || got > 1.1*want || st.Misses != 0 {
		t.Fatalf("Stats.Hits %v after %v batch hits (misses %d)", got, want, st.Misses)
	}
	var sum uint64
	for _, e := range out {
		sum += e.Hits()
	}
	if got := float64(sum); got < 0.9*want || got > 1.1*want {
		t.Fatalf("sum of Entry.Hits %v after %v hits", got, want)
	}
}

// GetOrInsertBatch: every key looked up once (a hit or a miss in Stats),
// every missing key inserted once (make once per key, duplicates in the
// batch included), out[i] nil only where the insert was refused.
func TestGetOrInsertBatch(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100})
	for i := range 40 {
		tb.Insert(testKey(i), i)
	}
	keys := make([]FlowKey, 0, 130)
	for i := range 120 {
		keys = append(keys, testKey(i))
	}
	keys = append(keys, testKey(50), testKey(50)) // a new key, twice
	made := map[int]int{}
	out := make([]*Entry[int], len(keys))
	set := tb.GetOrInsertBatch(keys, func(i int) int { made[i]++; return 1000 + i }, out)
	// 40 hits, then 60 inserts fill the table to 100; the other 20 new
	// keys are refused; key 50's two extra copies find its flow.
	if set != 40+60+2 || tb.Len() != 100 {
		t.Fatalf("set %d, len %d", set, tb.Len())
	}
	// Each key of the batch is one lookup: the 80 new keys and key 50's
	// two extra copies missed (they were inserted later in the batch).
	if st := tb.Stats(); st.Misses != 82 || st.Inserts != 100 || st.FullRejections != 20 {
		t.Fatalf("stats %v: want 82 misses, 100 inserts, 20 refused", st)
	}
	for i, e := range out {
		k := keys[i]
		got, ok := tb.Get(k)
		if (e != nil) != ok || e != nil && e != got {
			t.Fatalf("out[%d] = %v, table has %v", i, e, got)
		}
	}
	for i, n := range made {
		if n != 1 || i < 40 || i >= 120 {
			t.Fatalf("make(%d) ran %d times", i, n)
		}
	}
	if a := testing.AllocsPerRun(100, func() { tb.GetOrInsertBatch(keys[:40], func(int) int { return 0 }, out) }); a != 0 {
		t.Fatalf("an all-hit GetOrInsertBatch allocates %v times", a)
	}
}
