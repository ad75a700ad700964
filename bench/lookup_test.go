package bench

import (
	"fmt"
	"testing"
)

var sink *State

// BenchmarkGet looks up keys that are all present, in a shuffled order
// read sequentially from a slice (the key is in cache, as a parsed
// packet's key is; the table's memory is not).
func BenchmarkGet(b *testing.B) {
	for _, flows := range []int{10_000, 1_000_000, 4_000_000} {
		keys := Keys(flows, 1)
		probe := append(keys[:0:0], keys...)
		shuffle(probe, 2)
		for _, im := range Impls {
			if testing.Short() && flows > 1_000_000 {
				continue
			}
			b.Run(fmt.Sprintf("impl=%s/flows=%d", im.Name, flows), func(b *testing.B) {
				m := im.New(flows)
				for _, k := range keys {
					m.Insert(k, State{Action: 1})
				}
				b.ReportAllocs()
				b.ResetTimer()
				i := 0
				for b.Loop() {
					v, ok := m.Get(probe[i])
					if !ok {
						b.Fatal("miss")
					}
					sink = v
					if i++; i == len(probe) {
						i = 0
					}
				}
			})
		}
	}
}
