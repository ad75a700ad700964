package shard

// Classes: the owner keeps a class byte per slot (flowcache: the flow's
// timeout class), which the expiry pass reads beside the stamps. A reply
// key's slot carries ReplyClass: the pass never expires a flow through its
// reply key, only through its first key's slot.
const (
	// Classes is how many classes StaleStepLocked takes a cut for.
	Classes = 16
	// ReplyClass is the class byte of a reply key's slot.
	ReplyClass uint8 = Classes
)

// StaleStepLocked appends to dst every slot in the buckets [from, to) of the
// current array (overflow buckets included) that holds a flow's first key
// and whose stamp is below the cut of its class, cuts[class], and returns
// dst and the array's bucket count. It streams tag, slot and class words
// and loads no record, which is what lets an expiry pass cost little per
// flow. The caller holds the mutex; it may clear the returned slots before
// it unlocks.
//
// It is written for the pass's hot loop. Per bucket it compares all four
// stamps with their class's cut without a branch (an unsigned difference's
// top bit is the comparison) and masks the result with the occupied lanes,
// so it branches only on a bucket that holds a stale slot, which in a pass
// that expires little is rare. Overflow buckets, which are separate
// allocations, are visited after the main buckets of the step, from a
// list: their loads do not depend on each other, so their cache misses
// overlap instead of stalling the stream one at a time.
func (s *core) StaleStepLocked(from, to int, cuts *[Classes]uint32, dst []Pos) ([]Pos, int) {
	a := s.arr.Load()
	to = min(to, len(a.buckets))
	// Classes past the owner's (the reply class) have cut 0: never stale.
	var c [2 * Classes]uint64
	for i, v := range cuts {
		c[i] = uint64(v)
	}
	var over [64]*bucket
	n := 0
	for bi := from; bi < to; bi++ {
		b := &a.buckets[bi]
		// stale's test, written out: the call per bucket cost as much as
		// the test, and a pass that expires little finds nothing in most
		// buckets.
		cl := b.classes.Load()
		lt := (b.slots[0].Load()>>32-c[cl&31])>>63<<15 |
			(b.slots[1].Load()>>32-c[cl>>8&31])>>63<<31 |
			(b.slots[2].Load()>>32-c[cl>>16&31])>>63<<47 |
			(b.slots[3].Load()>>32-c[cl>>24&31])>>63<<63
		if lt != 0 {
			dst = s.staleLanes(a, b, lt, dst)
		}
		if b.next.Load() != 0 {
			if n == len(over) {
				dst = s.staleChains(a, over[:n], &c, dst)
				n = 0
			}
			over[n] = a.next(b)
			n++
		}
	}
	return s.staleChains(a, over[:n], &c, dst), len(a.buckets)
}

// stale appends b's occupied slots whose stamp is below their class's cut.
// Written out by hand (the stamp is a slot word's high half; free is
// match(tags, 0)) so that the common bucket, with nothing stale, is
// straight-line code.
func (s *core) stale(a *array, b *bucket, c *[2 * Classes]uint64, dst []Pos) []Pos {
	cl := b.classes.Load()
	lt := (b.slots[0].Load()>>32-c[cl&31])>>63<<15 |
		(b.slots[1].Load()>>32-c[cl>>8&31])>>63<<31 |
		(b.slots[2].Load()>>32-c[cl>>16&31])>>63<<47 |
		(b.slots[3].Load()>>32-c[cl>>24&31])>>63<<63
	if lt == 0 {
		return dst
	}
	return s.staleLanes(a, b, lt, dst)
}

// staleLanes appends the lanes of lt that are occupied.
func (s *core) staleLanes(a *array, b *bucket, lt uint64, dst []Pos) []Pos {
	t := b.tags.Load()
	occupied := ((t & laneLow15) + laneLow15) | t
	for m := lt & occupied; m != 0; m &= m - 1 {
		dst = append(dst, Pos{s, a, b, lane(m)})
	}
	return dst
}

func (s *core) staleChains(a *array, chains []*bucket, c *[2 * Classes]uint64, dst []Pos) []Pos {
	for _, b := range chains {
		for ; b != nil; b = a.next(b) {
			dst = s.stale(a, b, c, dst)
		}
	}
	return dst
}

// NearLocked appends to dst the slots holding a flow's first key among the
// first max slots from hash h's bucket on: its chain, then the buckets
// after it, wrapping around. It is the eviction scan: bounded, and local
// to where the new key goes. The caller holds the mutex.
func (s *core) NearLocked(h uint64, max int, dst []Pos) []Pos {
	a := s.arr.Load()
	bi := mix(h, a.seed) & a.mask
	seen := 0
	for range a.buckets {
		for b := &a.buckets[bi]; b != nil && seen < max; b = a.next(b) {
			t := b.tags.Load()
			for i := range slotsPerBucket {
				if t>>(i*tagBits)&tagMask != 0 && b.class(i) != ReplyClass {
					dst = append(dst, Pos{s, a, b, i})
				}
			}
			seen += slotsPerBucket
		}
		if seen >= max {
			break
		}
		bi = (bi + 1) & a.mask
	}
	return dst
}

// FlowsLocked appends every flow of the shard (the record of each slot
// that holds a flow's first key) to dst: a consistent snapshot, taken under
// the mutex held by the caller.
func (s *Shard[E]) FlowsLocked(dst []*E) []*E {
	a := s.arr.Load()
	a.each(func(b *bucket, i int, w uint64) {
		if refOf(w)&(refReply|refForeign) == 0 {
			dst = append(dst, (*E)(a.store.rec(refOf(w))))
		}
	})
	return dst
}

// AheadStepLocked appends to dst every slot in the buckets [from, to) of
// the current array (overflow buckets included) that holds a flow's first
// key and whose stamp is above above. Once the owner's clock has stepped
// back, these are the stamps that may say a flow was seen later than it
// was — a refresh that lowered a flow's last-seen time may have lowered
// its stamp in an array that a rebuild has since replaced — and the
// owner's pass heals them (a stamp may be early, never late). It loads no
// record; the caller holds the mutex. Only a pass after the clock stepped
// back calls it, so it is written for clarity, not speed.
func (s *core) AheadStepLocked(from, to int, above uint32, dst []Pos) []Pos {
	a := s.arr.Load()
	to = min(to, len(a.buckets))
	for bi := from; bi < to; bi++ {
		for b := &a.buckets[bi]; b != nil; b = a.next(b) {
			t := b.tags.Load()
			for i := range slotsPerBucket {
				if t>>(i*tagBits)&tagMask != 0 && b.class(i) != ReplyClass && stampOf(b.slots[i].Load()) > above {
					dst = append(dst, Pos{s, a, b, i})
				}
			}
		}
	}
	return dst
}
