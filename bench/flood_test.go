package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// BenchmarkEvictFlood is conntrack's early drop under a SYN flood: a table
// at its limit of 100k flows, half of them established and "assured" (a
// bit in the state word), the rest unanswered. phase=quiet looks the
// established flows up with nothing else running; phase=flood does the
// same while another goroutine inserts new unanswered flows as fast as it
// can (4x the limit per round), each admitted by evicting an unanswered
// flow (Config.Evict approves flows without the assured bit). ns/op is per
// lookup of an established flow; admitted/s and evicted are the flood's.
// No assured flow may be evicted.
func BenchmarkEvictFlood(b *testing.B) {
	const (
		limit   = 100_000
		assured = 1
	)
	keys := Keys(5*limit, 11)
	established := keys[:limit/2]
	for _, phase := range []string{"quiet", "flood"} {
		b.Run(fmt.Sprintf("impl=flowcache/phase=%s/flows=%d", phase, limit), func(b *testing.B) {
			t, err := flowcache.New(flowcache.Config[State]{
				Limit: limit, Seed: 0x5eed, Domain: reclaim.NewDomain(),
				Evict: func(e *flowcache.Entry[State]) bool { return e.State()&assured == 0 },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer t.Close()
			for i, k := range keys[:limit] {
				e, err := t.Insert(k, State{Action: 1})
				if err != nil {
					b.Fatal(err)
				}
				if i < len(established) {
					e.CompareAndSwapState(0, assured)
				}
			}
			var stop atomic.Bool
			var admitted atomic.Int64
			var wg sync.WaitGroup
			if phase == "flood" {
				wg.Go(func() {
					flood := keys[limit:]
					for i := 0; !stop.Load(); i = (i + 1) % len(flood) {
						if _, err := t.Insert(flood[i], State{}); err == nil {
							admitted.Add(1)
						}
					}
				})
			}
			probe := probeOrder(established)
			i := 0
			b.ResetTimer()
			for b.Loop() {
				if _, ok := t.Get(probe[i]); !ok {
					b.Fatal("an established flow is gone")
				}
				if i++; i == len(probe) {
					i = 0
				}
			}
			stop.Store(true)
			wg.Wait()
			st := t.Stats()
			if s := b.Elapsed().Seconds(); s > 0 {
				b.ReportMetric(float64(admitted.Load())/s, "admitted/s")
			}
			b.ReportMetric(float64(st.Evicted), "evicted")
			for _, k := range established {
				if e, ok := t.Get(k); !ok || e.State() != assured {
					b.Fatal("an assured flow was evicted")
				}
			}
		})
	}
}
