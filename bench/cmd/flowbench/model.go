package main

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"

	"github.com/flowcache/flowcache/flowcache"
)

// A source hands a worker its next packets: it fills keys (and syn: the
// packet belongs to a flow that never got past its first packets) and
// returns how many it filled, 0 when there is no more traffic. now is the
// simulated time in ms since the start of the run.
type source interface {
	next(keys []flowcache.FlowKey, syn []bool, now int64) int
}

// model is the built-in traffic, defined in simulated time so that what
// the table holds does not depend on how fast the machine forwards:
//
//   - a base population of Flows flow slots, split between the workers as
//     RSS splits flows between cores. Each packet picks a slot by a Zipf
//     law (s = 1.1), so a few slots carry most packets (elephants) and
//     most carry few (mice): heavy-tailed flow sizes. A slot's flow lives
//     for a Pareto-distributed time (minimum 10 s, α = 1.5, mean 30 s) and
//     is then replaced by a new flow (a new key); the old one goes idle
//     and expires after its TTL.
//   - a churn spike between spikeFrom and spikeTo: SpikeFlows new flows,
//     spread evenly over the spike, each a SYN from a spoofed source;
//     one flood packet in three retransmits the SYN of one of the last
//     64 flood flows, so they carry one or two packets — a SYN flood.
//     A worker behind schedule catches up within the spike (with whole
//     batches of flood if need be), never after it. They are marked
//     syn, so they expire after the short SYN TTL, and the table drains
//     once the spike is over — but for one flood flow in survivorEvery,
//     a connection opened during the flood: it is established (the
//     TTL, not the SYN TTL) and keeps sending after the spike, one packet
//     per batch in turn, so it survives the drain scattered among the
//     flows that left. That is what makes the heap after the drain mean
//     something: a table that keeps one heap object per flow keeps every
//     span a survivor lies in.
type model struct {
	flows, workers     int
	spikeFrom, spikeTo int64 // simulated ms since the start
	spikeFlows         int
	seed               uint64
}

const (
	zipfS       = 1.1
	lifeMinMs   = 10_000
	lifeAlpha   = 1.5
	lifeMaxMs   = 3_600_000
	zipfSamples = 1 << 18 // precomputed Zipf draws per worker
	floodRing   = 64      // recent flood flows a retransmission picks from
	// survivorEvery: one flood flow in this many is a connection that
	// survives the spike.
	survivorEvery = 100
)

type slot struct {
	key flowcache.FlowKey
	end int64 // simulated ms at which this flow stops sending
	gen uint32
}

// modelSource is one worker's share of the model: its slots and its share
// of the flood. Only that worker touches it.
type modelSource struct {
	m          *model
	w          int
	base       int // global index of slots[0]
	slots      []slot
	zipf       []uint32 // Zipf-distributed slot indices, drawn up front (a draw costs more than a lookup)
	rng        *rand.Rand
	floodTotal int // this worker's share of the spike
	floodDone  int
	ring       [floodRing]flowcache.FlowKey
	survivors  []flowcache.FlowKey // this worker's flood flows that survive the spike
	nextSurv   int                 // the survivor the next batch refreshes
}

func (m *model) source(w int) *modelSource {
	lo, hi := w*m.flows/m.workers, (w+1)*m.flows/m.workers
	s := &modelSource{
		m:          m,
		w:          w,
		base:       lo,
		slots:      make([]slot, hi-lo),
		zipf:       make([]uint32, zipfSamples),
		rng:        rand.New(rand.NewPCG(m.seed, uint64(w))),
		floodTotal: (w+1)*m.spikeFlows/m.workers - w*m.spikeFlows/m.workers,
	}
	z := rand.NewZipf(s.rng, zipfS, 1, uint64(max(len(s.slots)-1, 0)))
	for i := range s.zipf {
		s.zipf[i] = uint32(z.Uint64())
	}
	for i := range s.slots {
		// Start every slot part-way through a lifetime, so that they do
		// not all end at once.
		s.slots[i].end = int64(float64(s.lifetime()) * s.rng.Float64())
		s.slots[i].key = baseKey(lo+i, 0)
	}
	return s
}

// lifetime draws a flow's lifetime in ms from the Pareto law.
func (s *modelSource) lifetime() int64 {
	u := 1 - s.rng.Float64() // (0, 1]
	return int64(min(lifeMinMs*math.Pow(u, -1/lifeAlpha), lifeMaxMs))
}

func (s *modelSource) next(keys []flowcache.FlowKey, syn []bool, now int64) int {
	flood := 0
	// A worker that falls behind the spike's schedule catches up within
	// the spike, with whole batches of flood if need be, but never after.
	if m := s.m; now >= m.spikeFrom && now < m.spikeTo && s.floodDone < s.floodTotal {
		frac := min(float64(now-m.spikeFrom)/float64(max(m.spikeTo-m.spikeFrom, 1)), 1)
		flood = int(frac*float64(s.floodTotal)) - s.floodDone
	}
	z := s.rng.Uint32()
	for i := range keys {
		if flood > 0 {
			syn[i] = true
			if s.floodDone > 0 && z%3 == 0 { // a retransmitted SYN
				keys[i] = s.ring[uint32(z>>8)%uint32(min(s.floodDone, floodRing))]
			} else {
				keys[i] = floodKey(s.w, s.m.workers, s.floodDone)
				s.ring[s.floodDone%floodRing] = keys[i]
				if s.floodDone%survivorEvery == survivorEvery-1 {
					// A connection opened during the flood: established.
					syn[i] = false
					s.survivors = append(s.survivors, keys[i])
				}
				s.floodDone++
				flood--
			}
			z = z*1664525 + 1013904223
			continue
		}
		if i == 0 && len(s.survivors) > 0 && now >= s.m.spikeTo {
			// After the spike each batch refreshes one survivor in turn.
			keys[i], syn[i] = s.survivors[s.nextSurv%len(s.survivors)], false
			s.nextSurv++
			continue
		}
		j := int(s.zipf[(z+uint32(i))%zipfSamples])
		sl := &s.slots[j]
		if now >= sl.end {
			sl.gen++
			sl.end = now + s.lifetime()
			sl.key = baseKey(s.base+j, sl.gen)
		}
		keys[i], syn[i] = sl.key, false
	}
	return len(keys)
}

// baseKey is the key of generation gen of slot i: distinct for every
// (i, gen) up to 16M slots and 64k generations; a mix of TCP and UDP,
// one in 16 IPv6.
func baseKey(i int, gen uint32) flowcache.FlowKey {
	h := uint64(i)*0x9e3779b97f4a7c15 ^ uint64(gen)*0xc2b2ae3d27d4eb4f
	h ^= h >> 31
	proto, dport := uint8(flowcache.ProtoTCP), uint16(443)
	if i%4 == 3 {
		proto, dport = flowcache.ProtoUDP, 53
	}
	sport := uint16(1024 + gen%64000)
	if i%16 == 5 {
		var a [16]byte
		a[0], a[1] = 0xfd, 0x0c
		a[8], a[9], a[10], a[11] = byte(gen>>24), byte(gen>>16), byte(gen>>8), byte(gen)
		a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		return flowcache.NewFlowKey(netip.AddrFrom16(a), netip.MustParseAddr("fd0c::80"), sport, dport, proto)
	}
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	dst := netip.AddrFrom4([4]byte{172, 16, byte(h >> 8), byte(h)})
	return flowcache.NewFlowKey(src, dst, sport, dport, proto)
}

// floodKey is the key of flood flow n of worker w: a SYN to one server
// from a spoofed source address and port, distinct for every (w, n).
func floodKey(w, workers, n int) flowcache.FlowKey {
	id := uint64(n)*uint64(workers) + uint64(w)
	src := netip.AddrFrom4([4]byte{byte(20 + id>>40), byte(id >> 32), byte(id >> 24), byte(id >> 16)})
	return flowcache.NewFlowKey(src, netip.AddrFrom4([4]byte{172, 16, 0, 80}), uint16(id), 80, flowcache.ProtoTCP)
}

// replay is a capture's packets handed out by index: each worker takes
// the next len(keys) packets, so every worker sees a slice of the capture
// in turn, loops times over.
type replay struct {
	keys   []flowcache.FlowKey
	cursor atomic.Int64
	total  int64
}

func newReplay(keys []flowcache.FlowKey, loops int) *replay {
	return &replay{keys: keys, total: int64(len(keys)) * int64(max(loops, 1))}
}

func (r *replay) next(keys []flowcache.FlowKey, syn []bool, now int64) int {
	n := int64(len(keys))
	i := r.cursor.Add(n) - n
	if i >= r.total {
		return 0
	}
	n = min(n, r.total-i)
	for j := range n {
		keys[j], syn[j] = r.keys[(i+j)%int64(len(r.keys))], false
	}
	return int(n)
}
