package flowcache

import (
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/shard"
)

// ExpireResult is what one Expire pass did.
type ExpireResult struct {
	Expired  int   // flows removed because they were idle for their TTL
	Rebuilt  int   // shards rebuilt smaller because the pass drained them
	Released int64 // bytes the table stopped holding: bucket arrays and entries
}

// expireStep is how many buckets a pass examines per hold of a shard's
// mutex: 1024 buckets are 64 KiB of tags and stamps, some microseconds of
// streaming, so inserts to that shard wait at most that long.
const expireStep = 1024

// Expire runs one expiry pass at time now: it advances the table's coarse
// clock to now, removes every flow with now − LastSeen ≥ its TTL
// (millisecond granularity, saturating at 0 when now is before LastSeen;
// Config.Expiry, when set, gives each flow's TTL), and rebuilds every shard
// the pass leaves with more than twice max(2 × len, 64) slots at that size.
//
// It locks one shard at a time for one bounded step (expireStep buckets),
// never two at once, and no lookup waits for it. Without Config.Expiry it
// reads the slot stamps beside the tags and touches an entry only when its
// stamp says it may have expired; with Expiry it must ask every flow. It
// never refreshes a flow's last-seen time or hits.
//
// With Config.OnExpire set, the expired entries stay reachable from the
// domain until their grace period is over and their callbacks have run:
// on a Reclaimer's next tick, or in Synchronize when the program drives
// passes itself. Without OnExpire they are garbage once the pass returns.
func (t *Table[V]) Expire(now time.Time) ExpireResult {
	t.mustInit()
	ms := now.UnixMilli()
	t.now.Store(ms)
	var res ExpireResult
	if t.closed.Load() {
		return res
	}
	ttl := t.ttl.Load()
	var slots []shard.Slot
	var dead []*Entry[V]
	for i := range t.shards {
		dead = t.expireShard(&t.shards[i], ms, ttl, &res, &slots, dead[:0])
		if len(dead) > 0 {
			t.retire(append([]*Entry[V](nil), dead...)...)
		}
	}
	t.expired.Add(uint64(res.Expired))
	t.released.Add(res.Released)
	t.passes.Add(1)
	t.lastPass.Store(now)
	return res
}

func (t *Table[V]) expireShard(s *shard.Shard, nowMs int64, ttl time.Duration, res *ExpireResult, slots *[]shard.Slot, dead []*Entry[V]) []*Entry[V] {
	ttlMs := ttl.Milliseconds()
	cut := uint32(1<<32 - 1) // with Expiry every flow must be asked
	if t.expiry == nil {
		// A slot stamped s (in 1024 ms units) was last seen at or after
		// s·1024, and now is before (c+1)·1024, so its age is under
		// (c+1−s)·1024 ms: it cannot have expired while s ≥ c+1−ttl/1024.
		c := int64(t.stamp(nowMs))
		lim := c + 1 - ttlMs>>stampShift
		if lim <= 0 {
			// No flow can have expired yet, but flows removed since
			// the last pass may have drained the shard.
			s.Lock()
			start := time.Now()
			t.shrinkLocked(s, res)
			t.noteHold(time.Since(start))
			s.Unlock()
			return dead
		}
		cut = uint32(min(lim, 1<<32-1))
	}
	entrySize := int64(unsafe.Sizeof(Entry[V]{}))
	gen, restarts := uint64(0), 0
	// A panicking Config.Expiry must not leave the shard locked: unlock
	// it and retire what this pass already removed before the panic goes
	// on (the domain's watched pass recovers and counts it).
	locked := false
	defer func() {
		if locked {
			s.Unlock()
			t.retire(append([]*Entry[V](nil), dead...)...)
		}
	}()
	for from := 0; ; from += expireStep {
		s.Lock()
		locked = true
		start := time.Now()
		if g := s.Generation(); from > 0 && g != gen {
			// An insert grew the shard between two steps: the slots
			// moved, so scan the new array from its start (a bounded
			// number of times; what is left waits for the next pass).
			if restarts++; restarts > 2 {
				locked = false
				s.Unlock()
				break
			}
			from = 0
		}
		gen = s.Generation()
		var buckets int
		*slots, buckets = s.StaleStep(from, from+expireStep, cut, (*slots)[:0])
		for _, sl := range *slots {
			e := entryOf[V](sl.Node())
			ls := e.lastSeen.Load()
			d := ttl
			if t.expiry != nil {
				d = t.expiry(e)
			}
			if max(nowMs-ls, 0) >= d.Milliseconds() {
				s.RemoveSlot(sl)
				t.live.Add(-1)
				dead = append(dead, e)
				res.Expired++
				res.Released += entrySize
				continue
			}
			// A lookup that refreshed the entry after a rebuild wrote
			// its stamp into the old array; mend it here so the next
			// pass skips this flow again.
			if st := t.stamp(ls); sl.Stamp().Load() < st {
				sl.Stamp().Store(st)
			}
		}
		last := from+expireStep >= buckets
		if last {
			t.shrinkLocked(s, res)
		}
		t.noteHold(time.Since(start))
		locked = false
		s.Unlock()
		if last {
			break
		}
	}
	return dead
}

// shrinkLocked gives memory back: a shard left at under a quarter of its
// slots is rebuilt at max(2 × len, 64) slots, with a fresh seed. Readers
// that loaded the old array finish on it; the collector frees it after.
func (t *Table[V]) shrinkLocked(s *shard.Shard, res *ExpireResult) {
	target := max(2*s.Len(), shard.MinSlots)
	if s.Slots() > 2*target {
		res.Released += s.ShrinkLocked(target)
		res.Rebuilt++
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
