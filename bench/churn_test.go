package bench

import (
	"runtime"
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
		var m Map
		var rings []*mixedRing
		b.Run("impl="+im.Name+"/flows=1000000", func(b *testing.B) {
			if m == nil {
				// One ring per goroutine RunParallel starts (GOMAXPROCS),
				// each filled to its window.
				m = im.New(churnFlows)
				rings = mixedRings(m, keys, churnFlows, max(1, gomaxprocs()))
				runtime.GC()
			}
			b.ResetTimer()
			mixedLoop(b, viaMap{m}, rings)
		})
		m, rings = nil, nil
	}
}

// viaMap runs BenchmarkMixed's operations on any Map, as BenchmarkChurn
// compares every implementation: the lookup keeps the value's pointer.
type viaMap struct{ m Map }

func (v viaMap) get(k flowcache.FlowKey) bool {
	p, ok := v.m.Get(k)
	if ok {
		sink = p
	}
	return ok
}
func (v viaMap) insert(k flowcache.FlowKey) { v.m.Insert(k, State{Action: 1}) }
func (v viaMap) remove(k flowcache.FlowKey) { v.m.Remove(k) }
