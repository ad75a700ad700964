package bench

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// BenchmarkMemory fills 1M flows, measures the heap, drains 90 % of them
// and measures again: what a churn spike leaves pinned once it is over.
// flowcache drains the way a forwarder's table does, by expiry (a fake
// clock, one pass, one grace period); the maps by deleting the keys.
//
// bytes/flow-full is the heap per flow at 1M flows; bytes/flow-drained is
// the heap per flow still live after the drain; heap-after/peak is the
// fraction of the peak heap still held.
func BenchmarkMemory(b *testing.B) {
	const flows = 1_000_000
	keys := Keys(flows, 3)
	for _, name := range []string{"flowcache", "xsync3.MapOf", "map.Mutex"} {
		b.Run(fmt.Sprintf("impl=%s/flows=%d", name, flows), func(b *testing.B) {
			var full, drained, left float64
			for b.Loop() {
				base := heapAlloc()
				var m Map
				var drain func()
				if name == "flowcache" {
					m, drain = expiringFlowcache(flows, keys)
				} else {
					im, _ := ImplNamed(name)
					m = im.New(flows)
					drain = func() {
						for i, k := range keys {
							if i%10 != 0 {
								m.Remove(k)
							}
						}
					}
				}
				for _, k := range keys {
					if !m.Insert(k, State{Action: 1}) {
						b.Fatal("insert failed")
					}
				}
				peak := heapAlloc() - base
				drain()
				if m.Len() != flows/10 {
					b.Fatalf("%d flows left after the drain, want %d", m.Len(), flows/10)
				}
				after := heapAlloc() - base
				full = float64(peak) / flows
				drained = float64(after) / float64(m.Len())
				left = float64(after) / float64(peak)
				runtime.KeepAlive(m)
			}
			b.ReportMetric(full, "bytes/flow-full")
			b.ReportMetric(drained, "bytes/flow-drained")
			b.ReportMetric(left, "heap-after/peak")
		})
	}
}

// expiringFlowcache is a table on a fake clock and its drain: every tenth
// key is looked up half a TTL after the fill, then a pass a TTL after the
// fill expires the rest, and a grace period lets the domain go of them.
func expiringFlowcache(flows int, keys []flowcache.FlowKey) (Map, func()) {
	d := reclaim.NewDomain()
	t, err := flowcache.New(flowcache.Config[State]{
		Limit: flows, TTL: time.Minute, Seed: 0x5eed, Domain: d,
		Clock:    func() time.Time { return base },
		OnRemove: func(e *flowcache.Entry[State], _ flowcache.Cause) {},
	})
	if err != nil {
		panic(err)
	}
	return &Flowcache{T: t}, func() {
		t.Expire(base.Add(30 * time.Second))
		for i := 0; i < len(keys); i += 10 {
			t.Get(keys[i])
		}
		t.Expire(base.Add(time.Minute))
		d.Synchronize()
	}
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
