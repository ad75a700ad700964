package main

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

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

// MarshalText writes the action as its word, so a JSON dump reads
// "forward" rather than 0.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (a *Action) UnmarshalText(b []byte) error {
	switch string(b) {
	case "forward":
		*a = Forward
	case "drop":
		*a = Drop
	default:
		return fmt.Errorf("action %q: want forward or drop", b)
	}
	return nil
}

// Flow is the value kept per flow: the decision taken on its first
// packet. It is fixed when the flow is stored (the table may move the
// flow to compact its memory, so nothing is ever written through
// Entry.Value); what changes per packet lives in the table's per-flow
// counters (Entry.Count) and state word (see assured).
type Flow struct {
	Action Action
}

// decide is the slow path, run once per flow on its first packet. This
// example forwards every IP flow; a firewall would consult its rules
// here, a NAT would pick a port, a load balancer a backend.
func decide(flowcache.FlowKey) Flow { return Flow{Action: Forward} }

// The flow's state word (Entry.State), which the program owns. One bit is
// used, conntrack's IPS_ASSURED: the flow has shown it is a real
// conversation (a packet came back in its reply direction, or it has
// carried more than assureAfter packets), so a full table under
// -full-policy=evict never evicts it to make room for a new one
// (conntrack's early drop).
const (
	assured uint32 = 1 << 0
	// assureAfter: a flow with more packets than this is assured even if
	// no reply was seen, as on a one-way path (the e2e test's, a
	// multicast stream, a tap). A SYN flood's flows carry one packet each.
	assureAfter = 3
)

// assure sets the assured bit on e unless it is set already. Another
// worker may set it meanwhile (packets of both directions of a flow may
// reach two workers): then the swap fails and the bit is set all the
// same, which is all that is wanted.
func assure(e *flowcache.Entry[Flow]) {
	if s := e.State(); s&assured == 0 {
		e.CompareAndSwapState(s, s|assured)
	}
}

// evictUnassured is Config.Evict under -full-policy=evict: only a flow
// that has not been assured may be evicted. It runs with a shard locked,
// and only reads the flow's state word.
func evictUnassured(e *flowcache.Entry[Flow]) bool { return e.State()&assured == 0 }

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
	// EvictWhenFull makes room: the insert evicts the longest-idle flow
	// near the new key that is not assured (Config.Evict =
	// evictUnassured), so a flood churns among its own one-packet flows
	// while every assured flow stays. With no such flow near, the packet
	// is dropped, as DropWhenFull does.
	EvictWhenFull
)

func parsePolicy(s string) (FullPolicy, error) {
	switch s {
	case "drop":
		return DropWhenFull, nil
	case "forward":
		return ForwardWhenFull, nil
	case "evict":
		return EvictWhenFull, nil
	}
	return 0, fmt.Errorf("-full-policy must be drop, forward or evict, not %q", s)
}

// tableConfig is the forwarder's table: limit, TTL and domain, and with
// EvictWhenFull the eviction rule.
func tableConfig(name string, limit int, ttl time.Duration, policy FullPolicy, domain *reclaim.Domain) flowcache.Config[Flow] {
	cfg := flowcache.Config[Flow]{Name: name, Limit: limit, TTL: ttl, Domain: domain}
	if policy == EvictWhenFull {
		cfg.Evict = evictUnassured
	}
	return cfg
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

// worker is one core's share of the forwarder: it owns one receiver of
// the fanout group and one sender, and handles its frames a batch at a
// time.
type worker struct {
	table  *flowcache.Table[Flow]
	reader *reclaim.Reader
	policy FullPolicy
	dstMAC [6]byte // the next hop
	srcMAC [6]byte // the out interface
	send   func(frame []byte) error
	peak   *atomic.Int64 // the most live flows seen after a batch that inserted, shared

	// seen, when not nil, collects both keys of every flow this worker
	// inserted, so a test can compare the flows the forwarder saw with a
	// capture's whichever direction of each came first (workers may race
	// on a connection whose directions the fanout gives to two of them).
	seen map[flowcache.FlowKey]struct{}

	// Per-batch scratch, reused: the keys of the batch's IP frames, the
	// frame each came from, and the flow GetOrInsertPairBatch gave each,
	// with what it did for each.
	keys     []flowcache.FlowKey
	frameOf  []int
	entries  []*flowcache.Entry[Flow]
	outcomes []flowcache.Outcome

	// newFlow is GetOrInsertPairBatch's make: w.decideAt, bound once so
	// that a batch allocates no closure.
	newFlow func(i int) (flowcache.FlowKey, Flow, bool)

	c counters
}

func newWorker(table *flowcache.Table[Flow], batch int) *worker {
	w := &worker{
		table:    table,
		keys:     make([]flowcache.FlowKey, 0, batch),
		frameOf:  make([]int, 0, batch),
		entries:  make([]*flowcache.Entry[Flow], batch),
		outcomes: make([]flowcache.Outcome, batch),
	}
	w.newFlow = w.decideAt
	return w
}

// decideAt is the decision for the flow of w.keys[i], which the batch is
// inserting: the flow is a connection's two directions, the key and its
// reverse (for this forwarder, which translates nothing, the reply's key
// is the reverse), so that the reply direction finds the same flow. It
// runs with the key's shard locked: it must not call the table.
func (w *worker) decideAt(i int) (flowcache.FlowKey, Flow, bool) {
	k := w.keys[i]
	return k.Reverse(), decide(k), true
}

// handle forwards one batch of Ethernet frames. It rewrites the MACs of
// the frames it forwards in place. The pipeline:
//
//  1. key every frame with ParseFrame; non-IP frames stop here;
//  2. GetOrInsertPairBatch: look all the keys up at once (their cache
//     misses overlap), and insert the decision for each one missing as a
//     pair, the key and its reverse (the slow path, its shards locked); a
//     key it could not insert (the table full, with nothing it may evict)
//     is answered by the FullPolicy;
//  3. for each frame of a flow in the table, Count it (packets and bytes,
//     exact, in the table, both directions on the one flow) and assure
//     the flow once a packet came through its reply key or it has carried
//     more than assureAfter packets; then apply the flow's decision:
//     rewrite the MACs and send, or drop;
//  4. note the flows the batch inserted (peak, seen).
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
	w.table.GetOrInsertPairBatch(w.keys, w.newFlow, w.entries, w.outcomes)
	inserted := false
	for j, e := range w.entries[:len(w.keys)] {
		f := frames[w.frameOf[j]]
		var act Action
		if e != nil {
			// Every packet of a stored flow counts, whatever the flow's
			// decision: the flow carried it (conntrack's acct does
			// the same).
			e.Count(len(f))
			// Until the flow is assured this reads the state word, the
			// packet count (Count just wrote both's line) and the key;
			// after, the state word only. A packet whose key is not the
			// flow's first is its reply direction: a conversation.
			// Packets may lag by what landed on an old copy of a flow
			// that just moved (folded in after a grace period), which
			// only delays the bit by a packet or two.
			if e.State()&assured == 0 && (e.Packets() > assureAfter || w.keys[j] != e.Key()) {
				assure(e)
			}
			act = e.Value().Action
			if w.outcomes[j] == flowcache.Inserted {
				inserted = true
				if w.seen != nil {
					w.seen[w.keys[j]] = struct{}{}
					w.seen[w.keys[j].Reverse()] = struct{}{}
				}
			}
		} else {
			act = w.refused()
		}
		if act == Drop {
			continue
		}
		copy(f[0:6], w.dstMAC[:])
		copy(f[6:12], w.srcMAC[:])
		if err := w.send(f); err != nil {
			w.c.sendErrors.Add(1)
			continue
		}
		w.c.out.Add(1)
	}
	if inserted {
		if n := int64(w.table.Len()); n > w.peak.Load() {
			storeMax(w.peak, n)
		}
	}
}

// refused is the first packet of a new flow that the table turned away
// (full, with nothing to evict; or closed while shutting down, treated
// alike): the FullPolicy decides.
func (w *worker) refused() Action {
	if w.policy == ForwardWhenFull {
		w.c.forwardedFull.Add(1)
		return Forward
	}
	w.c.droppedFull.Add(1)
	return Drop
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
