package flowcache

import (
	"sync/atomic"
	"testing"

	"github.com/flowcache/flowcache/reclaim"
)

// BenchmarkGetBesideLocker looks up flows of a 10k-flow table (all hits,
// the table in cache) from one goroutine while another takes and releases
// every shard's writer mutex in turn, as fast as it can: what a lookup
// pays for a line it reads that a writer writes. It measures the false
// sharing that shard.TestLookupWordsApart rules out: a lookup reads its
// shard's array pointer and record geometry, which must not share a line
// with the mutex.
func BenchmarkGetBesideLocker(b *testing.B) {
	tb, err := New(Config[int]{Limit: 20_000, Seed: 1, Domain: reclaim.NewDomain()})
	if err != nil {
		b.Fatal(err)
	}
	defer tb.Close()
	keys := make([]FlowKey, 10_000)
	for i := range keys {
		keys[i] = testKey(i)
		if _, err := tb.Insert(keys[i], i); err != nil {
			b.Fatal(err)
		}
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			for i := range tb.shards {
				tb.shards[i].Lock()
				//lint:ignore SA2001 the mutex's own writes are what the lookups meet
				tb.shards[i].Unlock()
			}
		}
	}()
	i := 0
	for b.Loop() {
		if _, ok := tb.Get(keys[i]); !ok {
			b.Fatal("miss")
		}
		if i++; i == len(keys) {
			i = 0
		}
	}
	stop.Store(true)
	<-done
}
