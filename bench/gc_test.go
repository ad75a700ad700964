package bench

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkGC times a forced garbage collection (runtime.GC, which runs a
// whole cycle and waits for it) with a full table resident: what the
// table costs the collector, which must scan every pointer it holds, on
// every cycle of the program that holds it. gc-ms is the same as ns/op, in
// milliseconds. 4M flows; 1M under -short.
func BenchmarkGC(b *testing.B) {
	flows := 4_000_000
	if testing.Short() {
		flows = 1_000_000
	}
	keys := Keys(flows, 5)
	for _, im := range Impls {
		b.Run(fmt.Sprintf("impl=%s/flows=%d", im.Name, flows), func(b *testing.B) {
			m := filled(im, keys)
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				runtime.GC()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "gc-ms")
			runtime.KeepAlive(m)
		})
	}
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }
