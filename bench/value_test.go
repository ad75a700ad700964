package bench

import (
	"flag"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/flowcache/flowcache/flowcache"
	xsync3 "github.com/puzpuzpuz/xsync/v3"
)

// rounds is how many times BenchmarkGetValue and BenchmarkMixed run their
// sub-benchmarks, one round after the other, each round every variant in
// turn: machine drift then hits every variant alike, which -count (each
// sub-benchmark count times in a row) does not give. The round is a key
// of the name, for benchstat to ignore:
//
//	go test -run '^$' -bench 'GetValue|Mixed' ./bench/ -rounds 10 > v.txt
//	benchstat -ignore /round -col /impl,/call -row .name,/flows v.txt
var rounds = flag.Int("rounds", 1, "rounds of BenchmarkGetValue's and BenchmarkMixed's sub-benchmarks, interleaved")

var sinkState State

// variant is one way of calling one implementation.
type variant struct {
	name string // impl=…/call=…
	run  func(b *testing.B)
}

// runRounds runs the variants that setup builds as the sub-benchmarks
// flows=…/impl=…/call=…/round=…, rounds times, interleaved. setup runs
// only when -bench selects one of them (so a run of one size builds only
// that size's tables), once, and done after the last.
func runRounds(b *testing.B, flows int, setup func() (vs []variant, done func())) {
	b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
		vs, done := setup()
		defer done()
		for r := range *rounds {
			for _, v := range vs {
				b.Run(fmt.Sprintf("%s/round=%d", v.name, r), v.run)
			}
		}
	})
}

// BenchmarkGetValue is BenchmarkGet with the value read, as a forwarder
// reads its decision, called two ways: directly (flowcache's Table.Get,
// MapOf's Load, the sharded map's Get, each on its concrete type) and
// through the by-value wrapper a program would write around it (ValueMap,
// through an interface: the key copied in, the value copied out). Every
// table is built once per size and stays resident while the variants take
// turns (runRounds). One goroutine, all hits, keys in a shuffled order.
func BenchmarkGetValue(b *testing.B) {
	for _, flows := range lookupFlows() {
		runRounds(b, flows, func() ([]variant, func()) {
			keys := Keys(flows, 1)
			probe := probeOrder(keys)
			fc := filled(Impls[0], keys).(*Flowcache)
			mo := filled(Impls[1], keys).(*mapOf)
			sh := filled(Impls[4], keys).(*sharded)
			// The floor: eight independent chases through as many bytes
			// as flowcache's table holds, ns a miss × the two misses a
			// lookup needs (bucket, then record): what a lookup costs if
			// the memory kept eight misses in flight and the CPU did
			// nothing else (ns/key; its ns/op is eight misses). chase1 is
			// one chase: the two misses' latency, what a lookup costs if
			// nothing of it overlapped the next lookup's.
			ring := chaseRing(max(int(fc.T.Stats().Bytes)/64, 1024))
			runtime.GC()
			return []variant{
				{"impl=floor/call=chase8", func(b *testing.B) { chase8(b, ring) }},
				{"impl=floor/call=chase1", func(b *testing.B) { b.ReportMetric(chase(b, ring, 1)*missesPerKey, "ns/key") }},
				{"impl=flowcache/call=direct", func(b *testing.B) { getFlowcache(b, fc.T, probe) }},
				{"impl=flowcache/call=adapter", func(b *testing.B) { getValue(b, ValueOf(fc), probe) }},
				{"impl=xsync3.MapOf/call=direct", func(b *testing.B) { getMapOf(b, mo.m, probe) }},
				{"impl=xsync3.MapOf/call=adapter", func(b *testing.B) { getValue(b, ValueOf(mo), probe) }},
				{"impl=sharded64.RWMutex/call=direct", func(b *testing.B) { getSharded(b, sh, probe) }},
				{"impl=sharded64.RWMutex/call=adapter", func(b *testing.B) { getValue(b, ValueOf(sh), probe) }},
			}, func() { fc.T.Close() }
		})
	}
}

func getFlowcache(b *testing.B, t *flowcache.Table[State], probe []flowcache.FlowKey) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e, ok := t.Get(probe[i])
		if !ok {
			b.Fatal("miss")
		}
		sinkState = *e.Value()
		if i++; i == len(probe) {
			i = 0
		}
	}
}

func getMapOf(b *testing.B, m *xsync3.MapOf[flowcache.FlowKey, *State], probe []flowcache.FlowKey) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v, ok := m.Load(probe[i])
		if !ok {
			b.Fatal("miss")
		}
		sinkState = *v
		if i++; i == len(probe) {
			i = 0
		}
	}
}

func getSharded(b *testing.B, s *sharded, probe []flowcache.FlowKey) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v, ok := s.Get(probe[i])
		if !ok {
			b.Fatal("miss")
		}
		sinkState = *v
		if i++; i == len(probe) {
			i = 0
		}
	}
}

func getValue(b *testing.B, m ValueMap, probe []flowcache.FlowKey) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v, ok := m.Get(probe[i])
		if !ok {
			b.Fatal("miss")
		}
		sinkState = v
		if i++; i == len(probe) {
			i = 0
		}
	}
}

// mixedOps is what BenchmarkMixed does to a map: look a key up and read
// its value, insert a new flow, remove one.
type mixedOps interface {
	get(k flowcache.FlowKey) bool
	insert(k flowcache.FlowKey)
	remove(k flowcache.FlowKey)
}

// The direct calls: each type is its own instantiation of mixedLoop, so
// its calls are static.
type (
	fcDirect    struct{ t *flowcache.Table[State] }
	mapOfDirect struct {
		m *xsync3.MapOf[flowcache.FlowKey, *State]
	}
	// viaAdapter looks up through the by-value wrapper and writes through
	// Map, both interfaces.
	viaAdapter struct {
		v ValueMap
		m Map
	}
)

func (d fcDirect) get(k flowcache.FlowKey) bool {
	e, ok := d.t.Get(k)
	if ok {
		sinkState = *e.Value()
	}
	return ok
}
func (d fcDirect) insert(k flowcache.FlowKey) { d.t.Insert(k, State{Action: 1}) }
func (d fcDirect) remove(k flowcache.FlowKey) { d.t.Remove(k) }

func (d mapOfDirect) get(k flowcache.FlowKey) bool {
	v, ok := d.m.Load(k)
	if ok {
		sinkState = *v
	}
	return ok
}
func (d mapOfDirect) insert(k flowcache.FlowKey) { d.m.Store(k, &State{Action: 1}) }
func (d mapOfDirect) remove(k flowcache.FlowKey) { d.m.Delete(k) }

func (a viaAdapter) get(k flowcache.FlowKey) bool {
	v, ok := a.v.Get(k)
	if ok {
		sinkState = v
	}
	return ok
}
func (a viaAdapter) insert(k flowcache.FlowKey) { a.m.Insert(k, State{Action: 1}) }
func (a viaAdapter) remove(k flowcache.FlowKey) { a.m.Remove(k) }

// mixedRing is one goroutine's keys: a ring whose live window
// keys[lo : lo+win] (modulo len) moves forward by one flow per insert and
// removal.
type mixedRing struct {
	keys []flowcache.FlowKey
	lo   int
	win  int
}

// mixedRings fills m with flows keys spread over parts rings, each
// filled to its window.
func mixedRings(m Map, keys []flowcache.FlowKey, flows, parts int) []*mixedRing {
	per := len(keys) / parts
	var rings []*mixedRing
	for p := range parts {
		r := &mixedRing{keys: keys[p*per : (p+1)*per], win: flows / parts}
		for _, k := range r.keys[:r.win] {
			m.Insert(k, State{Action: 1})
		}
		rings = append(rings, r)
	}
	return rings
}

// BenchmarkMixed is BenchmarkChurn (of every 20 operations 18 lookups with
// the value read, one new flow, one removal, at a steady 1M flows, from
// GOMAXPROCS goroutines, each on its own ring of keys) called directly and
// through the wrappers (ValueMap for the lookups, Map for the writes),
// flowcache beside xsync3.MapOf, interleaved in rounds (runRounds).
// Mops/s is the aggregate rate of all goroutines.
func BenchmarkMixed(b *testing.B) {
	const flows = churnFlows
	runRounds(b, flows, func() ([]variant, func()) {
		keys := Keys(flows+flows/4, 3)
		parts := max(1, gomaxprocs())
		fc := NewFlowcache(flows)
		fcRings := mixedRings(fc, keys, flows, parts)
		mo := Impls[1].New(flows).(*mapOf)
		moRings := mixedRings(mo, keys, flows, parts)
		runtime.GC()
		return []variant{
			{"impl=flowcache/call=direct", func(b *testing.B) { mixedLoop(b, fcDirect{fc.T}, fcRings) }},
			{"impl=flowcache/call=adapter", func(b *testing.B) { mixedLoop(b, viaAdapter{ValueOf(fc), fc}, fcRings) }},
			{"impl=xsync3.MapOf/call=direct", func(b *testing.B) { mixedLoop(b, mapOfDirect{mo.m}, moRings) }},
			{"impl=xsync3.MapOf/call=adapter", func(b *testing.B) { mixedLoop(b, viaAdapter{ValueOf(mo), mo}, moRings) }},
		}, func() { fc.T.Close() }
	})
}

// mixedLoop runs the 90/5/5 mix on m from GOMAXPROCS goroutines, one ring
// each, and reports the aggregate rate and the hit ratio (100 unless the
// map loses a flow: lookups only ask for keys inside a window).
func mixedLoop[O mixedOps](b *testing.B, m O, rings []*mixedRing) {
	var next atomic.Int64
	var hits, lookups atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rings[int(next.Add(1)-1)%len(rings)]
		n := len(r.keys)
		x := uint64(r.lo)*0x9e3779b97f4a7c15 | 1
		var h, l int64
		for op := 0; pb.Next(); op++ {
			switch op % 20 {
			case 0:
				m.insert(r.keys[(r.lo+r.win)%n])
				r.win++
			case 1:
				m.remove(r.keys[r.lo])
				r.lo = (r.lo + 1) % n
				r.win--
			default:
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				if m.get(r.keys[(r.lo+int(x%uint64(r.win)))%n]) {
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
}

// BenchmarkGetBesideWriter looks up flows of a 10k-flow table (all hits,
// the table in cache) from one goroutine while another inserts and
// removes other flows of the same table as fast as it can: the lookup's
// price for the lines writers write. A word a lookup reads that shares a
// cache line with one a writer writes (false sharing) costs the lookup a
// miss to the other core each time the writer has been there.
func BenchmarkGetBesideWriter(b *testing.B) {
	const flows = 10_000
	runRounds(b, flows, func() ([]variant, func()) {
		keys := Keys(2*flows, 5)
		probe := probeOrder(keys[:flows])
		fc := filled(Impls[0], keys[:flows]).(*Flowcache)
		mo := filled(Impls[1], keys[:flows]).(*mapOf)
		runtime.GC()
		return []variant{
			{"impl=flowcache/call=direct", func(b *testing.B) {
				besideWriter(b, keys[flows:], fcDirect{fc.T}, func() { getFlowcache(b, fc.T, probe) })
			}},
			{"impl=xsync3.MapOf/call=direct", func(b *testing.B) {
				besideWriter(b, keys[flows:], mapOfDirect{mo.m}, func() { getMapOf(b, mo.m, probe) })
			}},
		}, func() { fc.T.Close() }
	})
}

// besideWriter runs lookups while a writer goroutine inserts and then
// removes the keys of others, over and over, and reports the writer's
// rate beside the lookups' ns/op.
func besideWriter[O mixedOps](b *testing.B, others []flowcache.FlowKey, m O, lookups func()) {
	var stop atomic.Bool
	var writes atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := int64(0)
		for i := 0; !stop.Load(); i = (i + 1) % len(others) {
			m.insert(others[i])
			m.remove(others[i])
			n += 2
		}
		writes.Store(n)
	}()
	lookups()
	stop.Store(true)
	<-done
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(writes.Load())/s/1e6, "Mwrites/s")
	}
}
