package flowcache

import (
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// BenchmarkBatchStepMisses is a forwarder's batch step with misses: 32
// keys, 24 of them present and 8 new, through GetOrInsertBatch; ns/op is
// per batch, ns/key per key. The table starts over (timer stopped) every
// 64k new flows.
func BenchmarkBatchStepMisses(b *testing.B) {
	mk := func(i int) int { return i }
	benchBatchStep(b, false, func(tb *Table[int], keys []FlowKey, out []*Entry[int]) {
		tb.GetOrInsertBatch(keys, mk, out)
	})
}

// BenchmarkPairBatchStepMisses is BenchmarkBatchStepMisses on
// GetOrInsertPairBatch, each flow a pair under its key and the reverse.
func BenchmarkPairBatchStepMisses(b *testing.B) {
	var keys []FlowKey
	res := make([]Outcome, 32)
	mk := func(i int) (FlowKey, int, bool) { return keys[i].Reverse(), i, true }
	benchBatchStep(b, true, func(tb *Table[int], ks []FlowKey, out []*Entry[int]) {
		keys = ks
		tb.GetOrInsertPairBatch(ks, mk, out, res)
	})
}

func benchBatchStep(b *testing.B, pairs bool, step func(tb *Table[int], keys []FlowKey, out []*Entry[int])) {
	const batch, fresh, present, restart = 32, 8, 4096, 1 << 16
	newT := func() *Table[int] {
		t, err := New(Config[int]{Limit: 1 << 20, Shards: 8, Seed: 9, Domain: reclaim.NewDomain()})
		if err != nil {
			b.Fatal(err)
		}
		for i := range present {
			if k := testKey(i); pairs {
				t.InsertPair(k, k.Reverse(), i)
			} else {
				t.Insert(k, i)
			}
		}
		return t
	}
	tb := newT()
	keys := make([]FlowKey, batch)
	out := make([]*Entry[int], batch)
	next, j := present, 0
	b.ReportAllocs()
	for b.Loop() {
		for i := range keys {
			if i < fresh {
				keys[i] = testKey(next)
				next++
			} else {
				keys[i] = testKey(j % present)
				j += 7
			}
		}
		step(tb, keys, out)
		if next-present >= restart {
			b.StopTimer()
			tb.Close()
			tb, next = newT(), present
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/key")
}

// BenchmarkInsertWithClass is Insert of new flows into a table with a
// Config.Class: the path whose callback runs under the shard lock.
func BenchmarkInsertWithClass(b *testing.B) {
	const restart = 1 << 16
	newT := func() *Table[int] {
		t, err := New(Config[int]{Limit: 1 << 20, Shards: 8, Seed: 9, Domain: reclaim.NewDomain(),
			Timeouts: []time.Duration{time.Minute}, Class: func(v *int) int { return *v & 1 }})
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	tb := newT()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		tb.Insert(testKey(n), n)
		if n++; n == restart {
			b.StopTimer()
			tb.Close()
			tb, n = newT(), 0
			b.StartTimer()
		}
	}
}
