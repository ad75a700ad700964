// Package bench compares flowcache with the Go maps a forwarder would use
// instead — xsync v3 MapOf, xsync v4 Map, sync.Map, 64 maps behind
// RWMutexes, one map behind a Mutex — on a forwarder's workloads, all
// through one interface (Map) with the same pointer-free value (State).
//
// The benchmarks (go test -bench . ./bench/) name their sub-benchmarks
// impl=<name>/flows=<n>, so that benchstat can pivot on either:
//
//	BenchmarkGet          lookup hits at 10k, 1M, 4M flows, one goroutine
//	BenchmarkGetParallel  the same from GOMAXPROCS goroutines (Mlookups/s)
//	BenchmarkHotFlow      every goroutine looks up one flow
//	BenchmarkChurn        90 % hits, 5 % new flows, 5 % removals at 1M flows
//	BenchmarkFill         inserts into an empty table up to 10k / 1M (Minserts/s)
//	BenchmarkGC           one forced runtime.GC with 4M flows resident (gc-ms)
//	BenchmarkGetValue     Get with the value read, direct and through a
//	                      by-value wrapper (ValueMap), flowcache beside
//	                      MapOf and the sharded map, interleaved (-rounds)
//	BenchmarkMixed        BenchmarkChurn the same two ways, interleaved
//	BenchmarkGetBesideWriter  lookups while another goroutine writes
//
// -short drops the 4M-flow cases (BenchmarkGC then runs at 1M). Each
// sub-benchmark builds its table and drops it before the next, so at
// most one large table is resident. To compare:
//
//	go test -run '^$' -bench 'Get$' -count 10 ./bench/ > new.txt
//	benchstat -col /impl new.txt     # implementations side by side
//	benchstat old.txt new.txt        # before and after a change
//
// bench/cmd/flowbench runs the same implementations under a simulated
// forwarder's traffic.
package bench

import (
	"net/netip"
	"sync"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	xsync3 "github.com/puzpuzpuz/xsync/v3"
	xsync4 "github.com/puzpuzpuz/xsync/v4"
	"github.com/zeebo/xxh3"
)

// State is the flow state every implementation stores: pointer-free, as a
// forwarder's per-flow decision and counters are.
type State struct {
	Packets uint64
	Bytes   uint64
	Action  uint32
	Port    uint16
}

// Map is what a forwarder needs of a flow table, for comparing
// implementations on one workload. Get returns the stored state's address
// where the implementation has one (so a lookup is a real read of it).
type Map interface {
	Get(k flowcache.FlowKey) (*State, bool)
	Insert(k flowcache.FlowKey, v State) bool
	Remove(k flowcache.FlowKey)
	Len() int
	// Range calls fn for every stored flow until fn returns false. fn
	// must not call the Map (collect keys, then Remove them after).
	Range(fn func(k flowcache.FlowKey, v *State) bool)
}

// ValueMap is the lookup of a program's own wrapper around whichever
// map it uses, func (m *M) Get(k FlowKey) (V, bool): the key passed in and
// the value copied out, by value. Map.Get hands back the value's address
// instead. Called through this interface, as a harness that compares maps
// calls it, nothing of the wrapper inlines into the caller: the key
// crosses a call boundary twice (into the wrapper, then into the table).
type ValueMap interface {
	Get(k flowcache.FlowKey) (State, bool)
}

// FlowcacheValue is a by-value wrapper around a flowcache table.
type FlowcacheValue struct{ T *flowcache.Table[State] }

func (f FlowcacheValue) Get(k flowcache.FlowKey) (State, bool) {
	e, ok := f.T.Get(k)
	if !ok {
		return State{}, false
	}
	return *e.Value(), true
}

// MapOfValue is the same wrapper around an xsync3.MapOf of *State.
type MapOfValue struct {
	M *xsync3.MapOf[flowcache.FlowKey, *State]
}

func (m MapOfValue) Get(k flowcache.FlowKey) (State, bool) {
	v, ok := m.M.Load(k)
	if !ok {
		return State{}, false
	}
	return *v, true
}

// ValueOf returns the by-value wrapper of a Map built by Impls, for the
// implementations that have one (flowcache, xsync3.MapOf,
// sharded64.RWMutex), or nil.
func ValueOf(m Map) ValueMap {
	switch m := m.(type) {
	case *Flowcache:
		return FlowcacheValue{m.T}
	case *mapOf:
		return MapOfValue{m.m}
	case *sharded:
		return shardedValue{m}
	}
	return nil
}

type shardedValue struct{ s *sharded }

func (s shardedValue) Get(k flowcache.FlowKey) (State, bool) {
	v, ok := s.s.Get(k)
	if !ok {
		return State{}, false
	}
	return *v, true
}

// Impl is one implementation under test: its name for sub-benchmark
// names (impl=…) and a constructor sized for limit flows.
type Impl struct {
	Name string
	New  func(limit int) Map
}

// Impls are the implementations compared everywhere in this package, in
// the order they are printed.
var Impls = []Impl{
	{"flowcache", func(limit int) Map { return NewFlowcache(limit) }},
	{"xsync3.MapOf", func(limit int) Map { return &mapOf{m: xsync3.NewMapOf[flowcache.FlowKey, *State]()} }},
	{"xsync4.Map", func(limit int) Map { return &map4{m: xsync4.NewMap[flowcache.FlowKey, *State]()} }},
	{"sync.Map", func(limit int) Map { return &syncMap{} }},
	{"sharded64.RWMutex", func(limit int) Map { return newSharded(limit) }},
	{"map.Mutex", func(limit int) Map { return &lockedMap{m: make(map[flowcache.FlowKey]*State)} }},
}

// ImplNamed returns the implementation with that name.
func ImplNamed(name string) (Impl, bool) {
	for _, im := range Impls {
		if im.Name == name {
			return im, true
		}
	}
	return Impl{}, false
}

// Flowcache adapts a flowcache.Table to Map.
type Flowcache struct {
	T *flowcache.Table[State]
	D *reclaim.Domain // the table's domain, when NewFlowcache made it
}

// NewFlowcache returns a table with a fixed seed (reproducible runs) on a
// domain of its own, so benchmarks do not share callbacks.
func NewFlowcache(limit int) *Flowcache {
	d := reclaim.NewDomain()
	t, err := flowcache.New(flowcache.Config[State]{Limit: limit, Seed: 0x5eed, Domain: d})
	if err != nil {
		panic(err)
	}
	return &Flowcache{T: t, D: d}
}

func (f *Flowcache) Get(k flowcache.FlowKey) (*State, bool) {
	e, ok := f.T.Get(k)
	if !ok {
		return nil, false
	}
	return e.Value(), true
}
func (f *Flowcache) Insert(k flowcache.FlowKey, v State) bool {
	_, err := f.T.Insert(k, v)
	return err == nil
}
func (f *Flowcache) Remove(k flowcache.FlowKey) { f.T.Remove(k) }
func (f *Flowcache) Len() int                   { return f.T.Len() }
func (f *Flowcache) Range(fn func(flowcache.FlowKey, *State) bool) {
	f.T.Range(func(e *flowcache.Entry[State]) bool { return fn(e.Key(), e.Value()) })
}

// The Go maps store *State, as a forwarder sharing state between cores
// must: a value copy could not be updated in place.

type mapOf struct {
	m *xsync3.MapOf[flowcache.FlowKey, *State]
}

func (m *mapOf) Get(k flowcache.FlowKey) (*State, bool) { return m.m.Load(k) }
func (m *mapOf) Insert(k flowcache.FlowKey, v State) bool {
	m.m.Store(k, &v)
	return true
}
func (m *mapOf) Remove(k flowcache.FlowKey)                    { m.m.Delete(k) }
func (m *mapOf) Len() int                                      { return m.m.Size() }
func (m *mapOf) Range(fn func(flowcache.FlowKey, *State) bool) { m.m.Range(fn) }

type map4 struct {
	m *xsync4.Map[flowcache.FlowKey, *State]
}

func (m *map4) Get(k flowcache.FlowKey) (*State, bool) { return m.m.Load(k) }
func (m *map4) Insert(k flowcache.FlowKey, v State) bool {
	m.m.Store(k, &v)
	return true
}
func (m *map4) Remove(k flowcache.FlowKey)                    { m.m.Delete(k) }
func (m *map4) Len() int                                      { return m.m.Size() }
func (m *map4) Range(fn func(flowcache.FlowKey, *State) bool) { m.m.Range(fn) }

type syncMap struct{ m sync.Map }

func (m *syncMap) Get(k flowcache.FlowKey) (*State, bool) {
	v, ok := m.m.Load(k)
	if !ok {
		return nil, false
	}
	return v.(*State), true
}
func (m *syncMap) Insert(k flowcache.FlowKey, v State) bool {
	m.m.Store(k, &v)
	return true
}
func (m *syncMap) Remove(k flowcache.FlowKey) { m.m.Delete(k) }
func (m *syncMap) Len() int {
	n := 0
	m.m.Range(func(any, any) bool { n++; return true })
	return n
}
func (m *syncMap) Range(fn func(flowcache.FlowKey, *State) bool) {
	m.m.Range(func(k, v any) bool { return fn(k.(flowcache.FlowKey), v.(*State)) })
}

// sharded is the hand-rolled table many forwarders start with: 64 Go
// maps, each behind a sync.RWMutex, picked by a hash of the key.
type sharded struct {
	shards [64]struct {
		mu sync.RWMutex
		m  map[flowcache.FlowKey]*State
		_  [40]byte
	}
}

func newSharded(limit int) *sharded {
	s := &sharded{}
	for i := range s.shards {
		s.shards[i].m = make(map[flowcache.FlowKey]*State)
	}
	return s
}

func (s *sharded) shard(k *flowcache.FlowKey) int {
	a, b := k.Src().As16(), k.Dst().As16()
	var buf [36]byte
	copy(buf[:], a[:])
	copy(buf[16:], b[:])
	buf[32], buf[33] = byte(k.SrcPort()), byte(k.DstPort())
	buf[34] = k.Proto()
	return int(xxh3.Hash(buf[:]) & 63)
}

func (s *sharded) Get(k flowcache.FlowKey) (*State, bool) {
	sh := &s.shards[s.shard(&k)]
	sh.mu.RLock()
	v, ok := sh.m[k]
	sh.mu.RUnlock()
	return v, ok
}
func (s *sharded) Insert(k flowcache.FlowKey, v State) bool {
	sh := &s.shards[s.shard(&k)]
	sh.mu.Lock()
	sh.m[k] = &v
	sh.mu.Unlock()
	return true
}
func (s *sharded) Remove(k flowcache.FlowKey) {
	sh := &s.shards[s.shard(&k)]
	sh.mu.Lock()
	delete(sh.m, k)
	sh.mu.Unlock()
}
func (s *sharded) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.RLock()
		n += len(s.shards[i].m)
		s.shards[i].mu.RUnlock()
	}
	return n
}

// Range read-locks one shard at a time.
func (s *sharded) Range(fn func(flowcache.FlowKey, *State) bool) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for k, v := range sh.m {
			if !fn(k, v) {
				sh.mu.RUnlock()
				return
			}
		}
		sh.mu.RUnlock()
	}
}

type lockedMap struct {
	mu sync.Mutex
	m  map[flowcache.FlowKey]*State
}

func (m *lockedMap) Get(k flowcache.FlowKey) (*State, bool) {
	m.mu.Lock()
	v, ok := m.m[k]
	m.mu.Unlock()
	return v, ok
}
func (m *lockedMap) Insert(k flowcache.FlowKey, v State) bool {
	m.mu.Lock()
	m.m[k] = &v
	m.mu.Unlock()
	return true
}
func (m *lockedMap) Remove(k flowcache.FlowKey) {
	m.mu.Lock()
	delete(m.m, k)
	m.mu.Unlock()
}
func (m *lockedMap) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

// Range holds the one mutex for the whole walk, as a map behind a mutex
// must: every lookup waits for it.
func (m *lockedMap) Range(fn func(flowcache.FlowKey, *State) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.m {
		if !fn(k, v) {
			return
		}
	}
}

// Keys returns n distinct flow keys, shuffled, from a fixed seed: a mix of
// IPv4 TCP/UDP flows and some IPv6, as a forwarder's traffic has.
func Keys(n int, seed uint64) []flowcache.FlowKey {
	ks := make([]flowcache.FlowKey, n)
	for i := range ks {
		// A cheap bijection of i (multiply by an odd constant, xor-shift)
		// keeps keys distinct and spread.
		x := uint64(i)*0x9e3779b97f4a7c15 ^ seed
		x ^= x >> 29
		sport := uint16(1024 + i%60000)
		proto := uint8(flowcache.ProtoTCP)
		if i%4 == 3 {
			proto = flowcache.ProtoUDP
		}
		if i%16 == 5 {
			var a [16]byte
			a[0], a[1] = 0xfd, 0x0c
			for j := 2; j < 10; j++ {
				a[j] = byte(x >> (8 * (j - 2)))
			}
			a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			ks[i] = flowcache.NewFlowKey(netip.AddrFrom16(a), netip.MustParseAddr("fd0c::80"), sport, 443, proto)
			continue
		}
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		dst := netip.AddrFrom4([4]byte{172, 16, byte(x >> 8), byte(x)})
		ks[i] = flowcache.NewFlowKey(src, dst, sport, uint16(80+x%4), proto)
	}
	shuffle(ks, seed)
	return ks
}

func shuffle[T any](s []T, seed uint64) {
	x := seed | 1
	for i := len(s) - 1; i > 0; i-- {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		j := int(x % uint64(i+1))
		s[i], s[j] = s[j], s[i]
	}
}
