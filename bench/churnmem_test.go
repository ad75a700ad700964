package bench

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// BenchmarkChurnMemory is the heap in use (after collections, over what it
// was before the table) that the churn shapes a forwarder meets every day
// leave behind, beside the Go maps on the same keys. flowcache's tests hold
// the bounds (TestMemory* in flowcache/); this puts the peers beside it.
//
//	workload=die-young   every flow removed right after its insert (a refused
//	                     connection, an RST): inuse-B, with no live flow left
//	workload=survivors   each flow removed 50 inserts after it started, but one
//	                     in 100: inuse-B/live, and ×fill, that over the same
//	                     implementation plainly filled with as many flows
//	workload=churn       100k live flows, random remove-one-insert-one cycles
//	                     (10 per flow): inuse-after/fill
//	workload=flood       (flowcache only: the maps have no eviction) an evicting
//	                     SYN flood at a limit of 100k, half the flows assured,
//	                     two workers, no Reclaimer tick: peak/full, heap in use
//	                     sampled through the flood over the full table's before
//
// -short runs a tenth of each.
func BenchmarkChurnMemory(b *testing.B) {
	scale := 1
	if testing.Short() {
		scale = 10
	}
	impls := []string{"flowcache", "xsync3.MapOf", "map.Mutex"}
	for _, name := range impls {
		b.Run(fmt.Sprintf("workload=die-young/impl=%s", name), func(b *testing.B) {
			keys := Keys(1_000_000/scale, 21)
			var held uint64
			for b.Loop() {
				base := heapInuse()
				m := newImpl(name, len(keys))
				for _, k := range keys {
					m.Insert(k, State{Action: 1})
					m.Remove(k)
				}
				settle(m)
				held = heapInuse() - base
				runtime.KeepAlive(m)
			}
			b.ReportMetric(float64(held), "inuse-B")
		})
	}
	for _, name := range impls {
		b.Run(fmt.Sprintf("workload=survivors/impl=%s", name), func(b *testing.B) {
			const life, every = 50, 100
			keys := Keys(2_000_000/scale, 22)
			var per, fill float64
			for b.Loop() {
				base := heapInuse()
				m := newImpl(name, len(keys))
				for i, k := range keys {
					m.Insert(k, State{Action: 1})
					if j := i - life; j >= 0 && j%every != 0 {
						m.Remove(keys[j])
					}
				}
				settle(m)
				live := m.Len()
				per = float64(heapInuse()-base) / float64(live)
				runtime.KeepAlive(m)
				m = nil
				base = heapInuse()
				plain := newImpl(name, len(keys))
				for _, k := range keys[:live] {
					plain.Insert(k, State{Action: 1})
				}
				fill = float64(heapInuse()-base) / float64(live)
				runtime.KeepAlive(plain)
			}
			b.ReportMetric(per, "inuse-B/live")
			b.ReportMetric(per/fill, "×fill")
		})
	}
	for _, name := range impls {
		b.Run(fmt.Sprintf("workload=churn/impl=%s", name), func(b *testing.B) {
			live := 100_000 / scale
			keys := Keys(11*live, 23)
			var ratio float64
			for b.Loop() {
				base := heapInuse()
				m := newImpl(name, live)
				ring := make([]int, live)
				for i := range live {
					ring[i] = i
					m.Insert(keys[i], State{Action: 1})
				}
				fill := heapInuse() - base
				x := uint64(0x9e3779b97f4a7c15)
				for c := range 10 * live {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					j := int(x % uint64(live))
					m.Remove(keys[ring[j]])
					ring[j] = live + c
					m.Insert(keys[ring[j]], State{Action: 1})
				}
				settle(m)
				ratio = float64(heapInuse()-base) / float64(fill)
				runtime.KeepAlive(m)
			}
			b.ReportMetric(ratio, "inuse-after/fill")
		})
	}
	b.Run("workload=flood/impl=flowcache", func(b *testing.B) {
		limit := 100_000 / scale
		keys := Keys(11*limit, 24)
		const assured = 1
		var ratio float64
		for b.Loop() {
			d := reclaim.NewDomain()
			base := heapInuse()
			t, err := flowcache.New(flowcache.Config[State]{
				Limit: limit, Seed: 0x5eed, Domain: d,
				Evict:    func(e *flowcache.Entry[State]) bool { return e.State()&assured == 0 },
				OnRemove: func(*flowcache.Entry[State], flowcache.Cause) {},
			})
			if err != nil {
				b.Fatal(err)
			}
			for i, k := range keys[:limit] {
				e, err := t.Insert(k, State{Action: 1})
				if err != nil {
					b.Fatal(err)
				}
				if i%2 == 0 {
					e.CompareAndSwapState(0, assured)
				}
			}
			d.Synchronize()
			full := heapInuse() - base
			var peak atomic.Uint64
			var next atomic.Int64
			next.Store(int64(limit))
			// The sampler is not a worker: a worker that stopped to
			// collect would hold every grace period back meanwhile.
			done := make(chan struct{})
			var sampler sync.WaitGroup
			sampler.Go(func() {
				for {
					if h := heapInuse() - base; h > peak.Load() {
						peak.Store(h)
					}
					select {
					case <-done:
						return
					case <-time.After(time.Millisecond):
					}
				}
			})
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					r := d.Register()
					defer r.Unregister()
					for n := 0; ; n++ {
						i := int(next.Add(1))
						if i >= len(keys) {
							return
						}
						t.Insert(keys[i], State{})
						if n%32 == 31 {
							r.Quiescent()
						}
					}
				})
			}
			wg.Wait()
			close(done)
			sampler.Wait()
			ratio = float64(peak.Load()) / float64(full)
			t.Close()
		}
		b.ReportMetric(ratio, "peak/full")
	})
}

// newImpl is a fresh, empty implementation by name.
func newImpl(name string, limit int) Map {
	im, ok := ImplNamed(name)
	if !ok {
		panic("no implementation " + name)
	}
	return im.New(limit)
}

// settle lets a flowcache table finish what waits for a grace period, so
// that what is measured is what the table holds, not what it is about to
// give back (the maps have nothing pending).
func settle(m Map) {
	if f, ok := m.(*Flowcache); ok && f.D != nil {
		f.D.Synchronize()
	}
}
