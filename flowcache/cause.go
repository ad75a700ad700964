package flowcache

import (
	"fmt"
	"slices"

	"github.com/flowcache/flowcache/reclaim"
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
// runs.
func (t *Table[V]) retire(gs []gone[V]) {
	t.noteGone(gs)
	if t.onRemove == nil || len(gs) == 0 {
		return
	}
	// The closure holds the callback and the domain, not t, so a
	// dropped table is not kept alive by its pending callbacks; and a
	// copy of gs, so the caller's may stay on its stack.
	fn, d := t.onRemove, t.domain
	gs = slices.Clone(gs)
	d.Defer(func() { removeCallbacks(d, fn, gs) })
}

// retireOne is retire for one flow.
func (t *Table[V]) retireOne(e *Entry[V], why Cause) {
	if t.onRemove != nil || t.feed.Load() != nil {
		t.retire([]gone[V]{{e, why}})
	}
}

// removeCallbacks calls fn for each flow, in order. If one call panics,
// the flows after it are deferred again before the panic goes on to the
// domain (which recovers and counts it), so one bad callback costs no
// other flow its callback.
func removeCallbacks[V any](d *reclaim.Domain, fn func(*Entry[V], Cause), gs []gone[V]) {
	i := 0
	defer func() {
		if i < len(gs) {
			rest := gs[i:]
			d.Defer(func() { removeCallbacks(d, fn, rest) })
		}
	}()
	for i < len(gs) {
		g := gs[i]
		i++
		fn(g.e, g.why)
	}
}

// count adds n flows that left for why to the table's counters.
func (t *Table[V]) count(why Cause, n int) {
	switch why {
	case Expired:
		t.expired.Add(uint64(n))
	case Removed:
		t.removed.Add(int64(n))
	case Replaced:
		t.replaced.Add(int64(n))
	case Evicted:
		t.evicted.Add(int64(n))
	case Cleared:
		t.cleared.Add(uint64(n))
	}
}
