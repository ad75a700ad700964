package flowcache

import (
	"fmt"
	"slices"

	"github.com/flowcache/flowcache/reclaim"
	"github.com/flowcache/flowcache/shard"
)

// Cause is why a flow left the table, as OnRemove is told.
type Cause uint8

// The causes. Every flow that leaves has exactly one.
const (
	Expired  Cause = iota + 1 // idle for its class's timeout at a pass
	Removed                   // Remove of either of its keys
	Replaced                  // an insert of one of its keys stored another flow
	Evicted                   // an insert at the limit made room (Config.Evict)
	Cleared                   // Clear or Close
)

var causeNames = [...]string{Expired: "expired", Removed: "removed", Replaced: "replaced", Evicted: "evicted", Cleared: "cleared"}

// String is the cause as a lower-case word: "expired", "removed",
// "replaced", "evicted" or "cleared".
func (c Cause) String() string {
	if int(c) < len(causeNames) && causeNames[c] != "" {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// gone is a flow that left, with its cause, waiting for OnRemove.
type gone[V any] struct {
	e   *Entry[V]
	why Cause
}

// retire hands flows that left the table to the domain, whose grace
// period guarantees no registered worker still holds them when OnRemove
// runs; then, for a V with pointers, their values are released. With
// neither to do it does nothing. With no OnRemove and no registered worker
// the release runs at once: a grace period is then over at once, as for
// folds.
func (t *Table[V]) retire(gs []gone[V]) {
	if len(gs) == 0 || t.onRemove == nil && !t.releaseValues {
		return
	}
	if t.onRemove == nil && t.domain.Readers() == 0 {
		for _, g := range gs {
			release(g.e)
		}
		return
	}
	// The closure holds the callback, the domain and the pending counter,
	// not t, so a dropped table is not kept alive by its pending
	// callbacks; and a copy of gs, so the caller's may stay on its stack.
	fn, d, rel, pend := t.onRemove, t.domain, t.releaseValues, t.pend
	// A variable of its own for the copy: gs itself must not reach the
	// closure, or every caller's array of flows would move to the heap,
	// an allocation per insert whether or not a flow left.
	own := slices.Clone(gs)
	bytes := int64(len(own)) * int64(recordBytes[V]())
	pend.n.Add(bytes)
	d.Defer(func() {
		defer pend.n.Add(-bytes)
		removeCallbacks(d, fn, rel, own)
	})
}

// retireOne is retire for one flow.
func (t *Table[V]) retireOne(e *Entry[V], why Cause) {
	if t.onRemove != nil || t.releaseValues {
		t.retire([]gone[V]{{e, why}})
	}
}

// removeCallbacks calls fn (when set) for each flow, in order, and then
// releases its value if rel. If one call panics, that flow is released
// still, and the flows after it are deferred again before the panic goes
// on to the domain (which recovers and counts it), so one bad callback
// costs no other flow its callback.
func removeCallbacks[V any](d *reclaim.Domain, fn func(*Entry[V], Cause), rel bool, gs []gone[V]) {
	i, calling := 0, -1
	defer func() {
		if rel && calling >= 0 {
			release(gs[calling].e) // its callback panicked
		}
		if i < len(gs) {
			rest := gs[i:]
			d.Defer(func() { removeCallbacks(d, fn, rel, rest) })
		}
	}()
	for i < len(gs) {
		g := gs[i]
		calling = i
		i++
		if fn != nil {
			fn(g.e, g.why)
		}
		calling = -1
		if rel {
			release(g.e)
		}
	}
}

// count adds n flows that left for why to the table's counters: the
// causes a write counts in the shard s it holds, or the pass's and
// Clear's in the table's (s may then be nil).
func (t *Table[V]) count(s *shard.Shard[Entry[V]], why Cause, n int) {
	switch why {
	case Expired:
		t.expired.Add(uint64(n))
	case Removed:
		s.TallyLocked(tallyRemoved, uint64(n))
	case Replaced:
		s.TallyLocked(tallyReplaced, uint64(n))
	case Evicted:
		s.TallyLocked(tallyEvicted, uint64(n))
	case Cleared:
		t.cleared.Add(uint64(n))
	}
}
