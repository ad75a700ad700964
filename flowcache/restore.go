package flowcache

import (
	"errors"
	"fmt"
)

// ErrInvalidFlow: Restore was given a flow the table cannot hold as it
// is (a timeout class the table does not have, or a zero last-seen
// time). Nothing changed.
var ErrInvalidFlow = errors.New("flowcache: invalid flow")

// Restore stores a flow as a snapshot or a replication stream describes
// it, in one locked step: its keys (row.Key, and row.Reply when
// row.Paired), its value, and what the table would otherwise have built
// up itself: its last-seen time, its class, its state word and its
// counters (Packets, Bytes, and the Hits estimate). A restored flow ages
// from row.LastSeen, so a flow restored 50 s idle in a class of 60 s
// expires at the pass 10 s later. Config.Class is not asked: row.Class is
// the flow's class.
//
// When a flow with exactly row's keys is stored already, Restore updates
// that flow in place, keeping its value: its last-seen time, class, state
// word and counters become row's (the counters are set, not added: a Count
// racing with the update may be lost). A flow's value is fixed, so a
// caller that means another value removes the flow first. Any other flow
// stored under one of row's keys is replaced whole, with cause Replaced,
// as InsertPair does.
//
// It never evicts. At the limit it returns an error matching ErrFull, on
// a closed table one matching ErrClosed, and for a class the table does
// not have or a zero LastSeen one matching ErrInvalidFlow; on any error
// nothing changed. The bool is true when it stored a new flow, false when
// it updated one in place.
func (t *Table[V]) Restore(row DumpRow[V]) (*Entry[V], bool, error) {
	t.mustInit()
	if row.Class < 0 || row.Class >= t.classes {
		return nil, false, fmt.Errorf("%w: table %q has no timeout class %d", ErrInvalidFlow, t.name, row.Class)
	}
	if row.LastSeen.IsZero() {
		return nil, false, fmt.Errorf("%w: flow %v has no last-seen time", ErrInvalidFlow, row.Key)
	}
	var ks keySet
	if row.Paired {
		t.twoKeys(&ks, row.Key, row.Reply)
	} else {
		t.oneKey(&ks, row.Key)
	}
	l := &ks.locks
	found := t.lockFor(&ks, l)
	defer t.unlockAll(l)
	if t.closed.Load() {
		return nil, false, t.errClose
	}
	var old [2]*Entry[V]
	n := 0
	for _, e := range found[:ks.n] {
		if e != nil && (n == 0 || old[0] != e) {
			old[n] = e
			n++
		}
	}
	if n == 1 && t.sameKeys(old[0], &ks) {
		// Under the locks no move runs in these shards: home is stable.
		e := old[0].home()
		t.restoreInto(e, &row, &ks)
		t.noteNew(e, ks.h[0])
		return e, false, nil
	}
	home := t.shardOf(ks.h[0])
	if n == 0 && !t.reserve() {
		home.TallyLocked(tallyFull, 1)
		return nil, false, t.errFull
	}
	ks.absent = n == 0
	t.markReplaced(old[:n])
	e := t.store(&ks, row.Value)
	t.restoreInto(e, &row, &ks)
	var gs [2]gone[V]
	for j, o := range old[:n] {
		// As in insert: store may have moved o; the first replaced
		// flow's unit of the limit passes to the new flow.
		o = o.home()
		t.unlinkReplaced(o, &ks, j > 0)
		gs[j] = gone[V]{o, Replaced}
	}
	home.TallyLocked(tallyInserts, 1)
	t.retire(gs[:n])
	return e, true, nil
}

// sameKeys reports whether e is stored under exactly ks's keys: the same
// first key, and the same reply key or none.
func (t *Table[V]) sameKeys(e *Entry[V], ks *keySet) bool {
	if e.Key() != ks.k[0] {
		return false
	}
	r, paired := e.Reply()
	if ks.n == 1 {
		return !paired
	}
	return paired && r == ks.k[1]
}

// restoreInto gives e row's last-seen time, class, state word and
// counters. The shards of e's keys are locked, so no writer or pass
// touches e or its slot meanwhile; lookups may refresh it.
func (t *Table[V]) restoreInto(e *Entry[V], row *DumpRow[V], ks *keySet) {
	ls := row.LastSeen.UnixMilli()
	// Last seen before the stamp: a stamp may be early, never late
	// (invariant 12). The slot word is stored under the mutex, as the
	// pass mends stamps; a lookup that read the old word fails its swap.
	e.lastSeen.Store(ls)
	if p, ok := t.shardOf(ks.h[0]).FindLocked(ks.h[0], skey(&ks.k[0])); ok {
		p.SetStamp(t.stamp(ls))
		// The class byte is where the pass reads the class; the state
		// word is where Class and the pass's exact check read it.
		p.SetClass(uint8(row.Class))
	}
	for {
		w := e.state.Load()
		nw := w&^(stateMask|classMask) | uint64(row.Class)<<classShift | uint64(row.State)
		if e.state.CompareAndSwap(w, nw) {
			break
		}
	}
	e.packets.Store(row.Packets)
	e.bytes.Store(row.Bytes)
	e.node.Aux.Store(uint32(min(row.Hits/hitSample, 1<<32-1)))
}
