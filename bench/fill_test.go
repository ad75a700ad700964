package bench

import (
	"fmt"
	"testing"
)

// BenchmarkFill inserts new flows into a table that starts empty, up to
// flows of them, then starts again with a new table: the rate at which a
// table absorbs a burst of new flows (a SYN flood, a restart), growth
// included. One goroutine; ns/op is per insert.
func BenchmarkFill(b *testing.B) {
	for _, flows := range []int{10_000, 1_000_000} {
		keys := Keys(flows, 4)
		for _, im := range Impls {
			b.Run(fmt.Sprintf("impl=%s/flows=%d", im.Name, flows), func(b *testing.B) {
				b.ReportAllocs()
				m := im.New(flows)
				i := 0
				for b.Loop() {
					if i == len(keys) {
						b.StopTimer()
						m, i = im.New(flows), 0
						b.StartTimer()
					}
					if !m.Insert(keys[i], State{Action: 1}) {
						b.Fatal("insert failed")
					}
					i++
				}
				reportRate(b, "Minserts/s")
			})
		}
	}
}
