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
