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
			var d drained
			for b.Loop() {
				d = fillAndDrain(b, name, keys, 10, heapAlloc)
			}
			b.ReportMetric(float64(d.peak)/flows, "bytes/flow-full")
			b.ReportMetric(float64(d.after)/float64(d.left), "bytes/flow-drained")
			b.ReportMetric(float64(d.after)/float64(d.peak), "heap-after/peak")
		})
	}
}

// drained is what fillAndDrain measured: the heap over its base at the
// peak and after the drain, and the flows left.
type drained struct {
	peak, after uint64
	left        int
}

// fillAndDrain fills a table of implementation name with keys, measures
// the heap (by heap, over what it was before), drains all but every
// every-th flow (flowcache by its expiry pass, which rebuilds drained
// shards and moves their survivors densely; the peers by Remove) and
// measures again.
func fillAndDrain(b *testing.B, name string, keys []flowcache.FlowKey, every int, heap func() uint64) drained {
	base := heap()
	var m Map
	var drain func()
	if name == "flowcache" {
		m, drain = drainingFlowcache(len(keys), keys, every)
	} else {
		im, _ := ImplNamed(name)
		m = im.New(len(keys))
		drain = func() {
			for i, k := range keys {
				if i%every != 0 {
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
	d := drained{peak: heap() - base}
	drain()
	if want := (len(keys) + every - 1) / every; m.Len() != want {
		b.Fatalf("%d flows left after the drain, want %d", m.Len(), want)
	}
	d.after, d.left = heap()-base, m.Len()
	runtime.KeepAlive(m)
	return d
}

// drainingFlowcache is a flowcache table on a fake clock whose drain is
// its expiry pass: every every-th flow is seen half a TTL in, the rest go
// idle and expire, and a grace period lets the domain go of them (and of
// the storage the rebuilds left).
func drainingFlowcache(flows int, keys []flowcache.FlowKey, every int) (Map, func()) {
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
		for i := 0; i < len(keys); i += every {
			t.Get(keys[i])
		}
		t.Expire(base.Add(time.Minute))
		t.Expire(base.Add(time.Minute + time.Second))
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
