package bench

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/flowcache/flowcache/flowcache"
)

var sink *State

// lookupFlows are the table sizes of the lookup benchmarks: one that fits
// in cache, and two that are bound by memory. -short drops 4M.
func lookupFlows() []int {
	if testing.Short() {
		return []int{10_000, 1_000_000}
	}
	return []int{10_000, 1_000_000, 4_000_000}
}

// filled returns a Map of implementation im holding every key of keys.
func filled(im Impl, keys []flowcache.FlowKey) Map {
	m := im.New(len(keys))
	for _, k := range keys {
		if !m.Insert(k, State{Action: 1}) {
			panic(fmt.Sprintf("%s: insert %d of %d failed", im.Name, m.Len(), len(keys)))
		}
	}
	return m
}

// forEachImpl runs bench once per implementation as the sub-benchmark
// impl=<name>/flows=<flows>, on a Map holding keys. The Map is built once
// per sub-benchmark however often the testing package calls it (it calls
// a function several times to size b.N unless it uses b.Loop) and dropped
// after it, so that only one large table is resident at a time.
func forEachImpl(b *testing.B, keys []flowcache.FlowKey, bench func(b *testing.B, m Map)) {
	for _, im := range Impls {
		var m Map
		b.Run(fmt.Sprintf("impl=%s/flows=%d", im.Name, len(keys)), func(b *testing.B) {
			if m == nil {
				m = filled(im, keys)
				runtime.GC() // the fill's garbage is not the lookups' cost
			}
			b.ReportAllocs()
			b.ResetTimer()
			bench(b, m)
		})
		m = nil
	}
}

// probeOrder returns keys in another shuffled order: the order lookups
// walk them in, so that consecutive lookups touch unrelated memory.
func probeOrder(keys []flowcache.FlowKey) []flowcache.FlowKey {
	probe := append(keys[:0:0], keys...)
	shuffle(probe, 2)
	return probe
}

// BenchmarkGet looks up keys that are all present, in a shuffled order
// read sequentially from a slice (the key is in cache, as a parsed
// packet's key is; the table's memory is not). One goroutine.
func BenchmarkGet(b *testing.B) {
	for _, flows := range lookupFlows() {
		keys := Keys(flows, 1)
		probe := probeOrder(keys)
		forEachImpl(b, keys, func(b *testing.B, m Map) { lookupLoop(b, m, probe) })
	}
}

// lookupLoop looks up probe's keys in turn, one goroutine, each a hit.
func lookupLoop(b *testing.B, m Map, probe []flowcache.FlowKey) {
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
}

// BenchmarkGetParallel is BenchmarkGet from GOMAXPROCS goroutines at once,
// each walking the shuffled keys from its own offset. ns/op is wall time
// per lookup across all of them; Mlookups/s is the aggregate rate.
func BenchmarkGetParallel(b *testing.B) {
	for _, flows := range lookupFlows() {
		keys := Keys(flows, 1)
		probe := probeOrder(keys)
		forEachImpl(b, keys, func(b *testing.B, m Map) {
			var next atomic.Uint64
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)*0x9e3779b97f4a7c15>>1) % len(probe)
				var last *State
				for pb.Next() {
					v, ok := m.Get(probe[i])
					if !ok {
						panic("miss")
					}
					last = v
					if i++; i == len(probe) {
						i = 0
					}
				}
				_ = last
			})
			reportRate(b, "Mlookups/s")
		})
	}
}

// BenchmarkHotFlow is one flow that every goroutine looks up at once (an
// elephant flow spread over every core by RSS, or a DNS server's flow):
// a table that writes to the entry on every hit — a hit counter, a
// last-seen time — bounces its cache line between the cores on every
// packet. flowcache samples its hit counts and refreshes last-seen once
// per clock tick, so the line stays shared. The table holds 10k flows.
func BenchmarkHotFlow(b *testing.B) {
	keys := Keys(10_000, 1)
	hot := keys[len(keys)/2]
	forEachImpl(b, keys, func(b *testing.B, m Map) {
		b.RunParallel(func(pb *testing.PB) {
			var last *State
			for pb.Next() {
				v, ok := m.Get(hot)
				if !ok {
					panic("miss")
				}
				last = v
			}
			_ = last
		})
		reportRate(b, "Mlookups/s")
	})
}

// reportRate reports b.N operations over the elapsed time as a rate in
// millions per second, under unit.
func reportRate(b *testing.B, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s/1e6, unit)
	}
}
