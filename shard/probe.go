package shard

import (
	"sync/atomic"
	"unsafe"
)

// Probe is one key's lookup split into steps, for batch lookups that want
// the cache misses of many keys in flight at once: Locate every key (no
// memory touched but the shard's array header), then Tags every key (one
// bucket miss each, independent of each other), then Candidate every key
// (a tag match and the candidate record's address, from the bucket now in
// cache), then touch every candidate's key (one record miss each), then
// Resolve. Each step's loads are independent across keys, so the CPU
// overlaps their misses; a key that needs more (a tag that matched the
// wrong record, an overflow chain) finishes with a full walk.
//
// A Probe holds one pointer (its array): a batch keeps an array of them,
// and every pointer stored there costs a write barrier while the collector
// runs, which under churn is often.
type Probe struct {
	a   *array
	i   uint64 // the bucket's index in a
	tag uint64
}

// Locate computes where the chain of hash h starts in the current array.
// It loads the array pointer only.
func (s *core) Locate(h uint64) Probe {
	a := s.arr.Load()
	hh := mix(h, a.seed)
	return Probe{a: a, i: hh & a.mask, tag: tagOf(hh)}
}

// Tags loads the probe's first tag word: a batch calls it for every key
// before Candidate, so the bucket misses overlap without waiting on
// Candidate's branches.
func (p *Probe) Tags() uint64 { return p.a.buckets[p.i].tags.Load() }

// Candidate returns the record holding the key of the first slot of the
// probe's first bucket whose tag matches, or nil, and the slot's lane and
// word.
func (p *Probe) Candidate() (unsafe.Pointer, int, uint64) {
	b := &p.a.buckets[p.i]
	if m := match(b.tags.Load(), p.tag); m != 0 {
		i := lane(m)
		w := b.slots[i].Load()
		if ref := refOf(w); ref&refForeign == 0 {
			// keyRec's local path, written out (see lookup).
			if c := p.a.store.chunkAtIndex((ref & refIndex) >> chunkBits); c != nil {
				s := p.a.s
				return unsafe.Add(unsafe.Pointer(c), rawHeader+uintptr(ref&(chunkLen-1))*s.size), i, w
			}
			return nil, i, w
		}
		return p.a.s.keyRec(p.a, refOf(w)), i, w
	}
	return nil, 0, 0
}

// Resolve finishes the lookup of k, whose table hash is h, given
// Candidate's answer, as Lookup answers. It walks the whole chain again
// only when the candidate does not hold k.
func (p *Probe) Resolve(rec unsafe.Pointer, i int, w uint64, k *Key, h uint64) (unsafe.Pointer, *atomic.Uint64, uint64) {
	s := p.a.s
	first := &p.a.buckets[p.i]
	if rec != nil && (*Node)(rec).key.Equal(k) {
		return s.flow(rec, refOf(w)), &first.slots[i], w
	}
	for b := first; b != nil; b = p.a.next(b) {
		for m := match(b.tags.Load(), p.tag); m != 0; m &= m - 1 {
			i := lane(m)
			w := b.slots[i].Load()
			r := s.keyRec(p.a, refOf(w))
			if r == nil {
				// A stale ref: look again in the current array.
				return s.lookup(h, k)
			}
			if (*Node)(r).key.Equal(k) {
				return s.flow(r, refOf(w)), &b.slots[i], w
			}
		}
	}
	return nil, nil, 0
}
