package bench

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
)

// BenchmarkGetCount is what a forwarder does per packet: look the flow
// up, then count the packet on it. flowcache counts with Entry.Count (two
// atomic adds on the flow's record, which the table may move); the peers
// add to two counters in their value with sync/atomic, as a forwarder on a
// Go map must. One goroutine, keys in a shuffled order, every one a hit.
func BenchmarkGetCount(b *testing.B) {
	for _, flows := range lookupFlows() {
		if flows < 1_000_000 {
			continue
		}
		keys := Keys(flows, 1)
		probe := probeOrder(keys)
		forEachImpl(b, keys, func(b *testing.B, m Map) {
			i := 0
			if fc, ok := m.(*Flowcache); ok {
				for b.Loop() {
					e, ok := fc.T.Get(probe[i])
					if !ok {
						b.Fatal("miss")
					}
					e.Count(64)
					if i++; i == len(probe) {
						i = 0
					}
				}
				return
			}
			for b.Loop() {
				v, ok := m.Get(probe[i])
				if !ok {
					b.Fatal("miss")
				}
				atomic.AddUint64(&v.Packets, 1)
				atomic.AddUint64(&v.Bytes, 64)
				if i++; i == len(probe) {
					i = 0
				}
			}
		})
	}
}

// BenchmarkDrainScattered is the memory left after a flood drains with
// its survivors scattered among it: 1M flows inserted one after the other,
// of which every 100th survives (a connection opened while the flood ran)
// and the rest leave. inuse-after/peak is the heap in use (spans holding
// any object, HeapInuse, after two collections and FreeOSMemory) after
// the drain over the same at the peak: Go never moves a heap object, so a
// table with one object per flow keeps every span that holds a survivor.
// flowcache drains by its expiry pass, which rebuilds drained shards and
// moves their survivors densely; the peers by Remove.
func BenchmarkDrainScattered(b *testing.B) {
	const flows = 1_000_000
	keys := Keys(flows, 7)
	for _, name := range []string{"flowcache", "xsync3.MapOf", "sharded64.RWMutex", "map.Mutex"} {
		b.Run(fmt.Sprintf("impl=%s/flows=%d", name, flows), func(b *testing.B) {
			var d drained
			for b.Loop() {
				d = fillAndDrain(b, name, keys, 100, heapInuse)
			}
			b.ReportMetric(float64(d.after)/float64(d.peak), "inuse-after/peak")
			b.ReportMetric(float64(d.after)/float64(d.left), "inuse-bytes/survivor")
		})
	}
}

// heapInuse is the heap in use (HeapInuse: bytes in spans that hold at
// least one object) after two collections and a return of free memory to
// the OS.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
