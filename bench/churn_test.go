package bench

import (
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/flowcache/flowcache/flowcache"
)

// churnFlows is the steady flow count of BenchmarkChurn.
const churnFlows = 1_000_000

// BenchmarkChurn is a forwarder's steady state with flows coming and
// going: of every 20 operations 18 are lookups of present flows, one
// inserts a new flow and one removes the oldest, so the table stays at
// churnFlows. GOMAXPROCS goroutines run it at once, each on its own
// slice of the keys (as RSS steers a flow to one core), each slice a ring
// whose live window moves forward by one flow per insert and removal;
// removed keys come back into the window when the ring wraps.
//
// The hit-% metric checks the mix: lookups only ask for keys inside the
// window, so it is 100 unless an implementation loses a flow.
func BenchmarkChurn(b *testing.B) {
	const slack = 4 // each ring has 1/slack more keys than its window
	keys := Keys(churnFlows+churnFlows/slack, 3)
	for _, im := range Impls {
		type ring struct {
			keys []flowcache.FlowKey
			lo   int // the window is keys[lo : lo+win] modulo len(keys)
			win  int
		}
		var m Map
		var rings []*ring
		b.Run("impl="+im.Name+"/flows=1000000", func(b *testing.B) {
			if m == nil {
				// One ring per goroutine RunParallel starts (GOMAXPROCS),
				// each filled to its window.
				parts := max(1, gomaxprocs())
				m = im.New(churnFlows)
				per := len(keys) / parts
				for p := range parts {
					r := &ring{keys: keys[p*per : (p+1)*per], win: churnFlows / parts}
					for _, k := range r.keys[:r.win] {
						m.Insert(k, State{Action: 1})
					}
					rings = append(rings, r)
				}
				runtime.GC()
			}
			var next atomic.Int64
			var hits, lookups atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rings[int(next.Add(1)-1)%len(rings)]
				n := len(r.keys)
				x := uint64(r.lo)*0x9e3779b97f4a7c15 | 1
				var h, l int64
				for op := 0; pb.Next(); op++ {
					switch op % 20 {
					case 0: // a new flow at the head of the window
						m.Insert(r.keys[(r.lo+r.win)%n], State{Action: 1})
						r.win++
					case 1: // the oldest flow ends
						m.Remove(r.keys[r.lo])
						r.lo = (r.lo + 1) % n
						r.win--
					default:
						x ^= x << 13
						x ^= x >> 7
						x ^= x << 17
						if v, ok := m.Get(r.keys[(r.lo+int(x%uint64(r.win)))%n]); ok {
							sink = v
							h++
						}
						l++
					}
				}
				hits.Add(h)
				lookups.Add(l)
			})
			if l := lookups.Load(); l > 0 {
				b.ReportMetric(100*float64(hits.Load())/float64(l), "hit-%")
			}
			reportRate(b, "Mops/s")
		})
		m, rings = nil, nil
	}
}
