package flowcache

import "github.com/flowcache/flowcache/shard"

// Changes to exactly one flow, whoever else uses its keys meanwhile: a
// flow is its record's identity, which a move keeps (its old copies
// forward to it), so an *Entry names one flow for as long as it is in the
// table, while a key may come to name another.

// SetValue gives the live flow e a new value and keeps everything else:
// its keys (both, for a pair), timeout class, state word, packet and byte
// counts, hits and last-seen time. Nothing leaves: no OnRemove runs and
// Stats counts no cause. It returns the flow's record now and true, or
// nil and false when e is no longer in the table (it left, or its key
// names another flow now; e may be an old copy of a flow that moved).
//
// A value is stored inline and may be many words, so it is never
// rewritten in place: SetValue copies the flow to a new record with the
// new value, as an evacuation moves a flow (the move protocol: its
// state is frozen and its counters moved, and what lands on the old copy
// meanwhile is folded in after a grace period), and points the flow's
// keys at the copy, one store each. A lookup finds the old value or the
// new one, never a mix; a pair's two keys may show the new value a moment
// apart, and both do once SetValue returns. A worker that holds e keeps
// reading the old value through e.Value() until its next Quiescent, while
// Count, State and CompareAndSwapState on e act on the flow. For a V with
// pointers the old value is released after the grace period.
//
// It locks the flow's first key's shard, as SetClass does. To change a
// flow's value, use SetValue, not Insert: an Insert under the flow's key
// stores another flow (cause Replaced, counters and state from zero, and
// a pair's other key gone).
func (t *Table[V]) SetValue(e *Entry[V], v V) (*Entry[V], bool) {
	t.mustInit()
	if e == nil {
		return nil, false
	}
	k := e.Key()
	h := t.hash(&k)
	s := t.shardOf(h)
	s.Lock()
	// Under the lock the flow cannot move, so its home is stable.
	home := e.home()
	p, ok := s.FindLocked(h, skey(&k))
	if !ok || p.IsReply() || shard.FlowAt[Entry[V]](p) != home {
		s.Unlock()
		return nil, false
	}
	nu, m := s.RenewLocked(home, func(dst, src *Entry[V]) {
		t.move(dst, src)
		if src.node.Kind() != shard.Reply {
			dst.value = v // dst is published after this returns
		}
	})
	t.noteNew(nu, h) // a standby's copy takes the new value too
	t.folds(s, m)
	t.unlock(s)
	t.retireCopy(home)
	t.reclaimIfPending()
	return nu, true
}

// RemoveEntry removes the flow e, both keys of a pair, and reports
// whether it did: it does nothing, and reports false, when e is no longer
// in the table, even if its key now names another flow (Remove(e.Key())
// would remove that one). An RST handler that holds the flow it tracked
// removes exactly that flow with it. e may be an old copy of a flow that
// moved or whose value SetValue changed. OnRemove runs after a grace
// period, with cause Removed.
func (t *Table[V]) RemoveEntry(e *Entry[V]) bool {
	t.mustInit()
	if e == nil {
		return false
	}
	var ks keySet
	t.oneKey(&ks, e.Key())
	l := &ks.locks
	// Under the lock of the first key's shard the flow cannot move.
	cur := t.lockFor(&ks, l)[0]
	ok := cur != nil && cur == e.home()
	if ok {
		t.unlink(cur, Removed)
	}
	t.unlockAll(l)
	if !ok {
		return false
	}
	t.retireOne(cur, Removed)
	t.reclaimIfPending()
	return true
}

// retireCopy hands the old record of a flow that SetValue copied to the
// domain: the flow has not left, so no OnRemove runs, but for a V with
// pointers the old value is released once no registered worker can hold
// the old copy (see release).
func (t *Table[V]) retireCopy(old *Entry[V]) {
	if !t.releaseValues {
		return
	}
	if t.domain.Readers() == 0 {
		release(old)
		return
	}
	pend, bytes := t.pend, int64(recordBytes[V]())
	pend.n.Add(bytes)
	t.domain.Defer(func() {
		defer pend.n.Add(-bytes)
		release(old)
	})
}
