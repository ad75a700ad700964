package main

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// Action is what the forwarder does with a flow's packets.
type Action uint8

const (
	Forward Action = iota // rewrite the MACs and send on the out interface
	Drop                  // count and forget
)

func (a Action) String() string {
	if a == Drop {
		return "drop"
	}
	return "forward"
}

// Flow is the state kept per flow: the decision taken on its first
// packet. It is never written after the insert, so every worker may read
// it without a lock.
type Flow struct {
	Action Action
}

// decide is the slow path, run once per flow on its first packet. This
// example forwards every IP flow; a firewall would consult its rules
// here, a NAT would pick a port, a load balancer a backend.
func decide(flowcache.FlowKey) Flow { return Flow{Action: Forward} }

// FullPolicy says what to do with the first packet of a flow that finds
// the table at its limit (a flood, or more flows than planned for).
type FullPolicy uint8

const (
	// DropWhenFull drops it: no state, no forwarding. Flows already in
	// the table keep going; new ones wait for room.
	DropWhenFull FullPolicy = iota
	// ForwardWhenFull forwards it without state ("fail open"); each of
	// its packets then takes the miss path again.
	ForwardWhenFull
)

func parsePolicy(s string) (FullPolicy, error) {
	switch s {
	case "drop":
		return DropWhenFull, nil
	case "forward":
		return ForwardWhenFull, nil
	}
	return 0, fmt.Errorf("-full-policy must be drop or forward, not %q", s)
}

// counters are one worker's packet counts. Only that worker writes them
// (atomically, so the stats goroutine may read them); each worker has its
// own, so no cache line is shared-written per packet.
type counters struct {
	in, out       atomic.Uint64 // frames read; frames sent
	notIP         atomic.Uint64 // ParseFrame said ErrNotIP (ARP, LLDP, …): not forwarded
	malformed     atomic.Uint64 // ParseFrame said ErrTruncated or ErrMalformed: not forwarded
	oversize      atomic.Uint64 // frames that filled the whole receive buffer: maybe cut, not forwarded
	droppedFull   atomic.Uint64 // first packets of new flows dropped because the table was full
	forwardedFull atomic.Uint64 // ... or forwarded without state (-full-policy=forward)
	sendErrors    atomic.Uint64
	_             [64]byte // keep the next worker's counters off this cache line
}

// worker is one core's share of the forwarder: it owns one receive socket
// of the fanout group and one send socket, and handles its frames a batch
// at a time.
type worker struct {
	table  *flowcache.Table[Flow]
	reader *reclaim.Reader
	policy FullPolicy
	dstMAC [6]byte // the next hop
	srcMAC [6]byte // the out interface
	send   func(frame []byte) error
	peak   *atomic.Int64 // the most live flows seen after an insert, shared

	// seen, when not nil, collects every key this worker inserted, so a
	// test can compare the flows the forwarder saw with a capture's.
	seen map[flowcache.FlowKey]struct{}

	// Per-batch scratch, reused: the keys of the batch's IP frames, the
	// frame each came from, and what GetBatch found for each.
	keys    []flowcache.FlowKey
	frameOf []int
	entries []*flowcache.Entry[Flow]

	c counters
}

func newWorker(table *flowcache.Table[Flow], batch int) *worker {
	return &worker{
		table:   table,
		keys:    make([]flowcache.FlowKey, 0, batch),
		frameOf: make([]int, 0, batch),
		entries: make([]*flowcache.Entry[Flow], batch),
	}
}

// handle forwards one batch of Ethernet frames. It rewrites the MACs of
// the frames it forwards in place. The pipeline:
//
//  1. key every frame with ParseFrame; non-IP frames stop here;
//  2. look all the keys up at once with GetBatch, which overlaps their
//     cache misses;
//  3. for each miss, GetOrInsert the decision (the slow path, one shard
//     lock); a full table answers by the FullPolicy;
//  4. apply each flow's decision: rewrite the MACs and send, or drop.
//
// The caller calls Quiescent after it: the entries in w.entries are not
// used past this batch.
func (w *worker) handle(frames [][]byte) {
	w.keys, w.frameOf = w.keys[:0], w.frameOf[:0]
	for i, f := range frames {
		k, err := flowcache.ParseFrame(f)
		switch {
		case errors.Is(err, flowcache.ErrNotIP):
			w.c.notIP.Add(1)
		case err != nil:
			w.c.malformed.Add(1)
		default:
			w.keys = append(w.keys, k)
			w.frameOf = append(w.frameOf, i)
		}
	}
	w.table.GetBatch(w.keys, w.entries)
	for j, e := range w.entries[:len(w.keys)] {
		var act Action
		if e != nil {
			act = e.Value().Action
		} else {
			act = w.miss(w.keys[j])
		}
		if act == Drop {
			continue
		}
		f := frames[w.frameOf[j]]
		copy(f[0:6], w.dstMAC[:])
		copy(f[6:12], w.srcMAC[:])
		if err := w.send(f); err != nil {
			w.c.sendErrors.Add(1)
			continue
		}
		w.c.out.Add(1)
	}
}

// miss is the first packet of a flow (or one whose entry expired, or one
// that a full table turned away before).
func (w *worker) miss(k flowcache.FlowKey) Action {
	e, inserted, err := w.table.GetOrInsert(k, func() Flow { return decide(k) })
	if err != nil {
		// ErrFull; or ErrClosed while shutting down, treated alike.
		if w.policy == ForwardWhenFull {
			w.c.forwardedFull.Add(1)
			return Forward
		}
		w.c.droppedFull.Add(1)
		return Drop
	}
	if inserted {
		if n := int64(w.table.Len()); n > w.peak.Load() {
			storeMax(w.peak, n)
		}
		if w.seen != nil {
			w.seen[k] = struct{}{}
		}
	}
	return e.Value().Action
}

// storeMax raises p to n unless it is already at least n.
func storeMax(p *atomic.Int64, n int64) {
	for {
		old := p.Load()
		if n <= old || p.CompareAndSwap(old, n) {
			return
		}
	}
}
