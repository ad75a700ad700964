package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
)

// BenchmarkFeedCost is the data path with a change feed attached and a
// consumer draining it every 100 ms, as a replication publisher does
// (feed=on), and without one (feed=off): Get, GetOrInsertBatch of 32
// present keys, Count, CompareAndSwapState, and an insert with the
// removal that keeps the table at its size. 100k flows, one goroutine.
// Compare feed=on with feed=off with benchstat; off against the parent
// commit shows what the hooks cost a table without a feed.
//
// op=cas swaps every flow in turn, so every flow changes in every drain
// interval (25 to 60 swaps each): the worst case, where the consumer's
// read of each changed flow costs the writer's next swap a coherence
// round trip. op=cas-hot swaps only hotFlows of them (1 %), as a
// forwarder's state changes touch a few flows in an interval.
func BenchmarkFeedCost(b *testing.B) {
	const hotFlows = 1000
	const flows = 100_000
	keys := Keys(2*flows, 1)
	for _, op := range []string{"get", "batch", "count", "cas", "cas-hot", "insert"} {
		for _, feed := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("op=%s/feed=%s", op, feed), func(b *testing.B) {
				t, err := flowcache.New(flowcache.Config[State]{Limit: flows + 1024})
				if err != nil {
					b.Fatal(err)
				}
				defer t.Close()
				for _, k := range keys[:flows] {
					if _, err := t.Insert(k, State{Action: 1}); err != nil {
						b.Fatal(err)
					}
				}
				if feed == "on" {
					stop, ok := attachFeed(t, 100*time.Millisecond)
					if !ok {
						b.Skip("this library has no change feed")
					}
					defer stop()
				}
				present := probeOrder(keys[:flows])
				entries := make([]*flowcache.Entry[State], flows)
				for i, k := range present {
					entries[i], _ = t.Get(k)
				}
				out := make([]*flowcache.Entry[State], 32)
				mk := func(int) State { return State{} }
				i, next := 0, flows
				b.ResetTimer()
				for b.Loop() {
					switch op {
					case "get":
						if _, ok := t.Get(present[i%flows]); !ok {
							b.Fatal("miss")
						}
					case "batch":
						j := i * 32 % (flows - 32)
						t.GetOrInsertBatch(present[j:j+32], mk, out)
					case "count":
						entries[i%flows].Count(64)
					case "cas":
						e := entries[i%flows]
						s := e.State()
						e.CompareAndSwapState(s, s+1)
					case "cas-hot":
						e := entries[i%hotFlows]
						s := e.State()
						e.CompareAndSwapState(s, s+1)
					case "insert":
						if _, err := t.Insert(keys[next%len(keys)], State{}); err != nil {
							b.Fatal(err)
						}
						t.Remove(keys[(next-flows)%len(keys)])
						next++
					}
					i++
				}
				if op == "batch" {
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/32, "ns/key")
				}
			})
		}
	}
}
