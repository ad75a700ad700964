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

// StaleStepLocked appends to dst every slot in the buckets [from, to) of
// the current array that holds a flow's first key and whose stamp is below
// the cut of its class, cuts[class], and returns dst and the array's bucket
// count, overflow buckets included: indexes past the main buckets are the
// overflow buckets, in the order of the overflow area. It streams tag,
// slot and class words and loads no record, which is what lets an expiry
// pass cost little per flow. The caller holds the mutex; it may clear the
// returned slots before it unlocks.
//
// It is written for the pass's hot loop, which memory bandwidth should
// bound. Per bucket it compares all four stamps with their class's cut
// without a branch (an unsigned difference's top bit is the comparison)
// and masks the result with the occupied lanes, so it branches only on a
// bucket that holds a stale slot, which in a pass that expires little is
// rare: a free lane's word (stamp 0) would otherwise look stale, and the
// branch on it, taken for most buckets at the loads a shard runs at, was
// mispredicted. Overflow buckets are streamed block by block from the
// overflow area, in no chain's order (the pass needs every slot, not a
// chain): following the chains cost a dependent miss per overflow bucket.
func (s *core) StaleStepLocked(from, to int, cuts *[Classes]uint32, dst []Pos) ([]Pos, int) {
	return s.scanStep(from, to, cuts, 0, false, dst)
}

// HealStepLocked is StaleStepLocked for a pass after the owner's clock
// stepped back: it also appends the slots holding a flow's first key whose
// stamp is above ahead (the current stamp). Those stamps may say a flow was
// seen later than it was — a refresh that lowered a flow's last-seen time
// may have lowered its stamp in an array that a rebuild has since replaced
// — and the owner heals them (a stamp may be early, never late). The stale
// and the ahead slots are disjoint as long as no cut is above ahead + 1.
// The ahead test is the stale one's mirror, branch-free beside it, so a
// pass that heals still streams the index once.
func (s *core) HealStepLocked(from, to int, cuts *[Classes]uint32, ahead uint32, dst []Pos) ([]Pos, int) {
	return s.scanStep(from, to, cuts, ahead, true, dst)
}

// cutTable is a pass's cuts by class byte: the owner's classes, then the
// reply class and the unused bytes, whose cut is 0 (never stale).
type cutTable [2 * Classes]uint64

func (s *core) scanStep(from, to int, cuts *[Classes]uint32, ahead uint32, heal bool, dst []Pos) ([]Pos, int) {
	a := s.arr.Load()
	nb := len(a.buckets)
	total := nb + int(a.overflow.n.Load())
	to = min(to, total)
	var c, up cutTable
	for i, v := range cuts {
		c[i] = uint64(v)
		up[i] = uint64(ahead)
	}
	for i := Classes; i < len(up); i++ {
		up[i] = 1<<32 - 1 // the reply class's stamps are never ahead either
	}
	scan := func(bs []bucket, dst []Pos) []Pos {
		if heal {
			return s.healRange(a, bs, &c, &up, dst)
		}
		return s.staleRange(a, bs, &c, dst)
	}
	if from < nb {
		dst = scan(a.buckets[from:min(to, nb)], dst)
	}
	if to > nb {
		dir := *a.overflow.dir.Load()
		for i := max(from, nb) - nb; i < to-nb; {
			j := i % overflowBlock
			end := min(overflowBlock, j+to-nb-i)
			dst = scan(dir[i/overflowBlock][j:end], dst)
			i += end - j
		}
	}
	return dst, total
}

// staleRange appends the stale occupied slots of bs.
func (s *core) staleRange(a *array, bs []bucket, c *cutTable, dst []Pos) []Pos {
	for i := range bs {
		b := &bs[i]
		cl := b.classes.Load()
		t := b.tags.Load()
		lt := (b.slots[0].Load()>>32-c[cl&31])>>63<<15 |
			(b.slots[1].Load()>>32-c[cl>>8&31])>>63<<31 |
			(b.slots[2].Load()>>32-c[cl>>16&31])>>63<<47 |
			(b.slots[3].Load()>>32-c[cl>>24&31])>>63<<63
		// Occupied lanes: a nonzero tag's high bit after the carry-free
		// add (free's complement, written out).
		if lt &= ((t & laneLow15) + laneLow15) | t; lt != 0 {
			dst = s.appendLanes(a, b, lt, dst)
		}
	}
	return dst
}

// healRange appends the stale or ahead occupied slots of bs.
func (s *core) healRange(a *array, bs []bucket, c, up *cutTable, dst []Pos) []Pos {
	for i := range bs {
		b := &bs[i]
		cl := b.classes.Load()
		t := b.tags.Load()
		s0, s1, s2, s3 := b.slots[0].Load()>>32, b.slots[1].Load()>>32, b.slots[2].Load()>>32, b.slots[3].Load()>>32
		lt := (s0-c[cl&31])>>63<<15 | (s1-c[cl>>8&31])>>63<<31 |
			(s2-c[cl>>16&31])>>63<<47 | (s3-c[cl>>24&31])>>63<<63
		gt := (up[cl&31]-s0)>>63<<15 | (up[cl>>8&31]-s1)>>63<<31 |
			(up[cl>>16&31]-s2)>>63<<47 | (up[cl>>24&31]-s3)>>63<<63
		if m := (lt | gt) & (((t & laneLow15) + laneLow15) | t); m != 0 {
			dst = s.appendLanes(a, b, m, dst)
		}
	}
	return dst
}

// appendLanes appends the lanes of m (high bit per lane) of bucket b.
func (s *core) appendLanes(a *array, b *bucket, m uint64, dst []Pos) []Pos {
	for ; m != 0; m &= m - 1 {
		dst = append(dst, Pos{s, a, b, lane(m)})
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
