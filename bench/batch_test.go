package bench

import (
	"fmt"
	"testing"

	"github.com/flowcache/flowcache/flowcache"
)

var sinkEntry *flowcache.Entry[State]

// BenchmarkGetBatch looks up the same shuffled present keys as
// BenchmarkGet, batch keys at a time, and reports ns per key: Get one by
// one (flowcache and xsync3.MapOf) beside GetBatch, in the same run.
func BenchmarkGetBatch(b *testing.B) {
	for _, flows := range []int{1_000_000, 4_000_000} {
		if testing.Short() && flows > 1_000_000 {
			continue
		}
		keys := Keys(flows, 1)
		probe := append(keys[:0:0], keys...)
		shuffle(probe, 2)
		fc := NewFlowcache(flows)
		for _, k := range keys {
			fc.Insert(k, State{Action: 1})
		}
		for _, batch := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("impl=flowcache.GetBatch/batch=%d/flows=%d", batch, flows), func(b *testing.B) {
				out := make([]*flowcache.Entry[State], batch)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i+batch > len(probe) {
						i = 0
					}
					if fc.T.GetBatch(probe[i:i+batch], out) != batch {
						b.Fatal("miss")
					}
					sinkEntry = out[0]
					i += batch
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/key")
			})
		}
		fc = nil
		m := Impls[1].New(flows) // xsync3.MapOf, same keys, same run
		for _, k := range keys {
			m.Insert(k, State{Action: 1})
		}
		b.Run(fmt.Sprintf("impl=xsync3.MapOf/batch=1/flows=%d", flows), func(b *testing.B) {
			b.ReportAllocs()
			lookupLoop(b, m, probe)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/key")
		})
	}
}
