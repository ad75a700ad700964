package flowcache

import (
	"time"

	"github.com/flowcache/flowcache/shard"
)

// ExpireResult is what one Expire pass did.
type ExpireResult struct {
	Expired  int   // flows removed because they were idle for their class's timeout
	Rebuilt  int   // shards rebuilt (index and storage) because the pass drained them
	Released int64 // bytes the table stopped holding: indexes and storage given back
}

// expireStep is how many buckets a pass examines per hold of a shard's
// mutex: 1024 buckets are 64 KiB of tags, stamps and classes, some
// microseconds of streaming, so inserts to that shard wait at most that
// long.
const expireStep = 1024

// Expire runs one expiry pass at time now: it advances the table's coarse
// clock to now, removes every flow with now − LastSeen ≥ its class's
// timeout (millisecond granularity, saturating at 0 when now is before
// LastSeen), and rebuilds every shard the pass leaves drained: at
// max(2 × keys, 64) slots when it has more than twice that, with its
// records copied densely, or in place when most of its storage is dead
// records. OnRemove runs for each expired flow with cause Expired.
//
// It locks one shard at a time for one bounded step (expireStep buckets),
// and two for a pair whose keys lie in two shards; no lookup waits for it.
// It reads the slot stamps and class bytes beside the tags and touches a
// flow's record only when its stamp says it may have expired. It never
// refreshes a flow's last-seen time or hits.
//
// The storage a rebuild leaves behind is released once a grace period has
// passed (the Reclaimer's next tick, or Synchronize), or at once when no
// worker is registered with the domain: a worker may still be counting on
// a flow's old copy until its next Quiescent.
func (t *Table[V]) Expire(now time.Time) ExpireResult {
	t.mustInit()
	ms := now.UnixMilli()
	t.now.Store(ms)
	var res ExpireResult
	if t.closed.Load() {
		return res
	}
	p := pass[V]{t: t, now: ms, res: &res}
	// While the clock is behind the latest time it showed, it stepped
	// back: stamps written before the step may be ahead of their flows'
	// last-seen times, so the pass looks for them too (heal).
	if mx := t.maxNow.Load(); ms >= mx {
		t.maxNow.CompareAndSwap(mx, ms)
	} else {
		p.heal, p.cur = true, t.stamp(ms)
	}
	p.cuts()
	for i := range t.shards {
		p.shard(&t.shards[i])
	}
	t.released.Add(res.Released)
	t.passes.Add(1)
	t.lastPass.Store(now)
	t.reclaimIfPending()
	return res
}

// pass is one Expire pass's state.
type pass[V any] struct {
	t        *Table[V]
	now      int64
	res      *ExpireResult
	timeouts [MaxClasses]int64 // ms, per class, read once at the start
	cut      [MaxClasses]uint32
	any      bool // some class can have expired flows
	stale    []shard.Pos
	heal     bool        // the clock stepped back: look at stamps ahead of cur too
	cur      uint32      // the current stamp, when healing
	cross    []*Entry[V] // expired pairs whose reply key lies in another shard
	gone     []gone[V]
}

// cuts computes, per class, the stamp below which a slot's flow may have
// expired. A slot stamped s (in 1024 ms units) was last seen at or after
// s·1024, and now is before (c+1)·1024, so its age is under (c+1−s)·1024
// ms: it cannot have expired while s ≥ c+1−timeout/1024. A class none of
// whose flows can have expired gets cut 0.
func (p *pass[V]) cuts() {
	c := int64(p.t.stamp(p.now))
	for i := range p.t.classes {
		d := p.t.timeouts[i].Load().Milliseconds()
		p.timeouts[i] = d
		if lim := c + 1 - d>>stampShift; lim > 0 {
			p.cut[i] = uint32(min(lim, 1<<32-1))
			p.any = true
		}
	}
}

// shard runs the pass over one shard: bounded steps of the scan, then the
// pairs that need a second shard's lock, then the rebuild or the
// evacuations that give memory back, one lock hold each.
func (p *pass[V]) shard(s *shard.Shard[Entry[V]]) {
	p.gone = p.gone[:0]
	p.cross = p.cross[:0]
	held := s.Bytes()
	defer func() { p.res.Released += max(held-s.Bytes(), 0) }()
	if p.any || p.heal {
		p.scan(s)
	}
	for _, e := range p.cross {
		p.expirePair(e)
	}
	for more := true; more; {
		s.Lock()
		start := time.Now()
		more = p.reclaim(s)
		p.t.noteHold(time.Since(start))
		s.Unlock()
	}
	if len(p.gone) > 0 {
		p.t.retire(append([]gone[V](nil), p.gone...))
	}
}

// scan walks the shard's index in steps of expireStep buckets, one lock
// hold each, and expires what the stamps point at.
func (p *pass[V]) scan(s *shard.Shard[Entry[V]]) {
	gen, restarts := uint64(0), 0
	for from := 0; ; from += expireStep {
		s.Lock()
		start := time.Now()
		if g := s.Generation(); from > 0 && g != gen {
			// An insert grew the shard between two steps: the slots
			// moved, so scan the new array from its start (a bounded
			// number of times; what is left waits for the next pass).
			if restarts++; restarts > 2 {
				s.Unlock()
				return
			}
			from = 0
		}
		gen = s.Generation()
		var buckets int
		p.stale, buckets = s.StaleStepLocked(from, from+expireStep, &p.cut, p.stale[:0])
		if p.heal {
			// Disjoint from the stale slots: those are at or below cur.
			p.stale = s.AheadStepLocked(from, from+expireStep, p.cur, p.stale)
		}
		for _, sl := range p.stale {
			p.slot(s, sl)
		}
		p.t.noteHold(time.Since(start))
		s.Unlock()
		if from+expireStep >= buckets {
			return
		}
	}
}

// slot looks at one flow whose stamp says it may have expired.
func (p *pass[V]) slot(s *shard.Shard[Entry[V]], sl shard.Pos) {
	e := shard.FlowAt[Entry[V]](sl)
	ls := e.lastSeen.Load()
	if !p.expired(e, ls) {
		// A lookup that refreshed the flow through an old array or its
		// reply key did not write this stamp; mend it here so the next
		// pass skips this flow again. After the clock stepped back the
		// stamp may be ahead of the flow instead: lower it, so it is
		// early, never late.
		if st := p.t.stamp(ls); sl.Stamp() != st {
			sl.SetStamp(st)
		}
		return
	}
	if r, ok := e.Reply(); ok && p.t.shardOf(p.t.hash(&r)) != s {
		// Its reply key needs the other shard's lock: after this step.
		p.cross = append(p.cross, e)
		return
	}
	p.t.unlink(e, Expired)
	p.res.Expired++
	p.gone = append(p.gone, gone[V]{e, Expired})
}

func (p *pass[V]) expired(e *Entry[V], lastSeen int64) bool {
	class := e.state.Load() & classMask >> classShift
	return max(p.now-lastSeen, 0) >= p.timeouts[class]
}

// expirePair expires a pair whose keys lie in two shards, with both
// locked in order, if it is still stored and still idle.
func (p *pass[V]) expirePair(e *Entry[V]) {
	k := e.Key()
	ks := p.t.oneKey(&k)
	var l lockSet
	p.t.lockFor(&ks, &l)
	// Moved since the scan? Then e is an old copy: look at the flow's
	// current record.
	if e = e.home(); p.t.findLocked(&k) == e && p.expired(e, e.lastSeen.Load()) {
		p.t.unlink(e, Expired)
		p.res.Expired++
		p.gone = append(p.gone, gone[V]{e, Expired})
	}
	p.t.unlockAll(&l)
}

// reclaim gives memory back, one step per call, and reports whether
// there is more to do. A shard left with more than twice max(2 × keys, 64)
// slots is rebuilt at that size, index and storage at once, its records
// copied densely; so is one whose chunk directory is mostly dropped
// chunks. Otherwise the step evacuates one chunk that fell to half live.
// The gap between growth (at 3/4 full) and shrink (under 1/4) keeps a
// shard near a steady size from resizing back and forth.
func (p *pass[V]) reclaim(s *shard.Shard[Entry[V]]) bool {
	target := max(2*s.Len(), shard.MinSlots)
	_, chunks, dir := s.StorageLocked()
	slots := s.Slots()
	switch {
	case slots > 2*target:
		slots = target
	case dir > dirSlack*(chunks+1):
	default:
		m := s.EvacuateLocked(1)
		if m.Empty() {
			return false
		}
		p.t.folds(s, m)
		return true
	}
	m := s.CompactLocked(slots)
	p.res.Rebuilt++
	p.t.folds(s, m)
	return false
}

// dirSlack bounds a storage's chunk directory: chunks are dropped as they
// empty, leaving a nil entry (8 bytes) that is never reused, because a
// reader may still resolve a stale ref into it; a rebuild starts a fresh
// directory once it has dirSlack entries per chunk held. At 256 the
// directory costs at most 8 % of the chunks it indexes, and a shard at a
// steady size rebuilds once per 255 turnovers of its flows.
const dirSlack = 256

// folds arranges for what lands on the moved records' old copies to be
// folded into their new homes once no worker can hold an old copy: after a
// grace period, or now when no worker is registered.
func (t *Table[V]) folds(s *shard.Shard[Entry[V]], m shard.Moved) {
	switch {
	case t.faults.noFold:
	case t.faults.noGrace || t.domain.Readers() == 0:
		fold[V](m)
	default:
		// The moved chunks stay reachable until the fold lets go of m.
		pend, bytes := t.pend, m.Bytes()
		pend.n.Add(bytes)
		t.domain.Defer(func() {
			defer pend.n.Add(-bytes)
			s.Lock()
			defer s.Unlock()
			fold[V](m)
		})
	}
}

func (t *Table[V]) noteHold(d time.Duration) {
	for {
		old := t.longestHold.Load()
		if int64(d) <= old || t.longestHold.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}
