package shard

import (
	"sync/atomic"
	"unsafe"
)

// rebuild builds a new index with room for slots slots (rounded up to a
// power of two and at least MinSlots, never fewer than the keys present)
// and a fresh seed, places every key in it and publishes it with one
// atomic store. The new index shares the current storage: records do not
// move. Readers that loaded the old array go on reading it; it is never
// written again. The caller holds the mutex. It returns the longest
// overflow chain of the new array.
func (s *core) rebuild(slots int) int {
	old := s.arr.Load()
	a := s.newArray(max(slots, s.n), s.seeds.Uint64(), old.store)
	var r rehash
	old.each(func(b *bucket, i int, w uint64) {
		if r.add(w, b.class(i)) {
			r.flush(s, old, a)
		}
	})
	r.flush(s, old, a)
	s.publish(old, a, r.over)
	return r.longest
}

// grow builds a new index with room for slots slots under the current
// array's seed, and publishes it: a split. Every key keeps its bucket
// hash, so its new bucket is the low bits of that hash which the larger
// mask takes, kept in its slot (bucket.low): the split reads the old
// index in order and writes the new one in order (old bucket i's keys go
// to buckets i, i + len(old), ...), and reads no record and hashes no
// key. A rehash read every key's record, which lie anywhere in the
// storage: that was most of what filling an empty table cost. The seed
// stays the generation's: a split moves no key to an unrelated bucket,
// so it undoes no flood, and every rebuild that does (a reseed, a tidy,
// a compaction) draws a fresh seed. The caller holds the mutex.
func (s *core) grow(slots int) {
	old := s.arr.Load()
	a := s.newArray(max(slots, s.n), old.seed, old.store)
	if a.mask < uint64(len(old.buckets)) || a.mask > 1<<32-1 {
		s.rebuild(slots) // not a growth, or past what low can place
		return
	}
	var over int64
	for bi := range old.buckets {
		for b := &old.buckets[bi]; b != nil; b = old.next(b) {
			t := b.tags.Load()
			cl := b.classes.Load()
			for f := ^free(t) & laneHigh; f != 0; f &= f - 1 {
				i := lane(f)
				if placeHashed(a, t>>(i*tagBits)&tagMask, b.low[i], b.slots[i].Load(), uint8(cl>>(8*i))) > 0 {
					over++
				}
			}
		}
	}
	s.publish(old, a, over)
}

// rehashBatch is how many keys a rebuild hashes and places at a time.
const rehashBatch = 32

// rehash places the keys of an array's slots in a new index, a batch at a
// time, so that the cache misses of a batch overlap: a rebuild walks the
// old index in order, but the records that hold its keys (which it must
// hash again) lie anywhere in the storage, and so do the keys' buckets in
// the new index. Touching every record of the batch in a loop of its own,
// then every new bucket, keeps up to a batch of misses in flight where
// hashing each key as its slot came up waited for one miss at a time:
// that wait was most of what filling an empty table cost (its growth
// rebuilds hash each key about 1.5 times over).
type rehash struct {
	n       int
	words   [rehashBatch]uint64
	classes [rehashBatch]uint8
	recs    [rehashBatch]unsafe.Pointer
	hashes  [rehashBatch]uint64
	longest int   // the longest overflow chain placed
	over    int64 // keys placed in overflow buckets
}

// add queues a slot word and its class, and reports whether the batch is
// full.
func (r *rehash) add(w uint64, class uint8) bool {
	r.words[r.n], r.classes[r.n] = w, class
	r.n++
	return r.n == rehashBatch
}

// flush places the queued keys of old's slots in a.
func (r *rehash) flush(s *core, old, a *array) {
	var touched uint64
	for j := range r.n {
		r.recs[j] = s.keyRec(old, refOf(r.words[j]))
		// A key may straddle two lines: touch its first and last words.
		touched += (*Node)(r.recs[j]).key[0] + (*Node)(r.recs[j]).key[4]
	}
	for j := range r.n {
		h := s.hash(&(*Node)(r.recs[j]).key)
		r.hashes[j] = h
		touched += a.bucket(mix(h, a.seed)).tags.Load()
	}
	for j := range r.n {
		d := place(a, r.hashes[j], r.words[j], r.classes[j])
		r.longest = max(r.longest, d)
		if d > 0 {
			r.over++
		}
	}
	r.n = 0
	rehashSink.Store(touched)
}

// rehashSink keeps the touching loads of a rehash batch from being
// optimised away: one store per batch.
var rehashSink atomic.Uint64

// publish makes a the shard's array with one store: a reader loads either
// the old array or the complete new one. over is how many of its keys lie
// in overflow buckets.
func (s *core) publish(old, a *array, over int64) {
	a.gen = old.gen + 1
	s.overKeys = over
	s.arr.Store(a)
}

// each calls fn for every occupied slot of a, in bucket order, overflow
// buckets after their bucket.
func (a *array) each(fn func(b *bucket, i int, w uint64)) {
	for bi := range a.buckets {
		for b := &a.buckets[bi]; b != nil; b = a.next(b) {
			t := b.tags.Load()
			for f := ^free(t) & laneHigh; f != 0; f &= f - 1 {
				i := lane(f)
				fn(b, i, b.slots[i].Load())
			}
		}
	}
}

// RebuildLocked rebuilds the index at the given slot capacity with a
// fresh seed, records staying where they are.
func (s *core) RebuildLocked(slots int) { s.rebuild(slots) }

// CompactLocked rebuilds the index at the given slot capacity and the
// storage densely, in one step: every record that a slot names is copied
// to a new storage, in slot order, and the new array is published with
// one store. This is how a drained shard gives its memory back however its
// surviving records lie: the old storage, dead records and all, is garbage
// once the readers that hold it are done.
//
// For each record that moves, the shard first records the forward (so
// Forward(src) is dst), then calls the owner's move function with dst zero
// but for its key, kind and position: the owner copies what it keeps and
// makes writes that land on src from now on reach dst. A pair's two
// records move together. The caller holds the mutex; it folds what still
// landed on the old copies, after a grace period, through the returned
// Moved.
func (s *core) CompactLocked(slots int) (m Moved) {
	old := s.arr.Load()
	ost := old.store
	nst := newStorage(s.layout)
	a := s.newArray(max(slots, s.n), s.seeds.Uint64(), nst)
	m.layout = s.layout
	remap := make([]uint32, ost.used) // new index + 1 of every moved flow record
	moved := 0
	var over int64 // keys placed in overflow buckets
	relocate := func(i uint32) uint32 {
		if r := remap[i]; r != 0 {
			return r - 1
		}
		src := ost.rec(i)
		ni, dst := nst.alloc((*Node)(src).kind == Pair)
		moved += s.relocate(ost, dst, src)
		remap[i] = ni + 1
		return ni
	}
	old.each(func(b *bucket, i int, w uint64) {
		ref := refOf(w)
		switch {
		case ref&refForeign != 0:
			// Stored by another shard, which moves it itself.
		case ref&refReply != 0:
			ref = ReplyRef(relocate(ref&refIndex - 1))
		default:
			ref = relocate(ref)
		}
		h := s.hash(&(*Node)(s.keyRec(a, ref)).key)
		if place(a, h, word(ref, stampOf(w)), b.class(i)) > 0 {
			over++
		}
	})
	dir := *ost.dir.Load()
	for i := range dir {
		if c := dir[i].Load(); c != nil && c.fwd.Load() != nil {
			m.chunks = append(m.chunks, c)
		}
	}
	if len(a.buckets) < len(old.buckets) {
		s.shrinks.Add(1)
	}
	s.compactions.Add(1)
	s.moved.Add(uint64(moved))
	s.publish(old, a, over)
	return m
}

// relocate moves a flow's record (and a pair's reply record) from src to
// dst with the owner's move function and returns how many records moved.
func (s *core) relocate(from *storage, dst, src unsafe.Pointer) int {
	return s.relocateWith(from, dst, src, s.move)
}

// EvacuateLocked evacuates up to n of the current storage's chunks that
// have fallen to the evacuation threshold or under, sparsest first, while
// the storage holds more dead records than its slack (storage.overHeld):
// their live records move to the tail, the slots that name them are
// pointed at the new homes in place (one store of the slot word each, so
// a reader finds the old copy or the new one), and the chunk is dropped.
// It moves at most the threshold's records per chunk, so a caller that
// evacuates one chunk per hold of the mutex holds it briefly. The caller
// folds the returned Moved as it folds a compaction's.
func (s *core) EvacuateLocked(n int) Moved { return s.evacuateLocked(n) }

func (s *core) evacuateLocked(n int) Moved {
	a := s.arr.Load()
	st := a.store
	m := Moved{layout: s.layout}
	for len(m.chunks) < n && len(st.sparse) > 0 && st.overHeld() {
		c := st.takeSparsest()
		if c == nil {
			break
		}
		// Only the chunk being filled gains records, and a queued chunk
		// is never that one, so it is still at the threshold or under. It
		// stays marked queued: the evacuation empties and drops it.
		s.evacuate(a, c)
		m.chunks = append(m.chunks, c)
	}
	return m
}

// SettleLocked evacuates chunks that have fallen to the evacuation
// threshold or under, sparsest first, until the storage holds no more
// dead records than its slack, so that its bound holds again (records
// held ≤ 2 × live records + one chunk): a writer calls it before it lets
// go of the mutex. A write kills at most a few flows, so it finds at most
// a few chunks to evacuate, each of at most the threshold's moves. The
// caller folds the returned Moved as it folds a compaction's.
func (s *core) SettleLocked() Moved {
	if st := s.arr.Load().store; len(st.sparse) == 0 || !st.overHeld() {
		return Moved{}
	}
	return s.evacuateLocked(int(^uint(0) >> 1))
}

func (s *core) evacuate(a *array, c *chunkHeader) {
	st := a.store
	base := c.index << chunkBits
	moved := 0
	c.liveRecords(func(p uint32) {
		src := st.at(c, p)
		if (*Node)(src).kind == Reply {
			return // moves with its pair's first record
		}
		_, n := s.moveLive(a, base+p, src, s.move) // the last one drops c
		moved += n
	})
	s.evacuations.Add(1)
	s.moved.Add(uint64(moved))
}

// holds reports whether key k's slot is in this shard, by finding it.
func (s *core) holds(a *array, k *Key) bool {
	_, ok := s.findIn(a, s.hash(k), k)
	return ok
}

// repoint points the slot of key k, which names ref old, at ref nu,
// keeping its stamp: a compare-and-swap, since lookups refresh stamps
// without the mutex.
func (s *core) repoint(a *array, k *Key, old, nu uint32) {
	p, ok := s.findIn(a, s.hash(k), k)
	if !ok || p.Ref() != old {
		panic("shard: a live record's slot is missing")
	}
	for {
		w := p.b.slots[p.i].Load()
		if p.b.slots[p.i].CompareAndSwap(w, word(nu, stampOf(w))) {
			return
		}
	}
}

// ResetLocked drops every key and record: the shard starts over with an
// empty array of MinSlots slots, a fresh seed, an empty storage and
// every foreign entry cleared and given back. Readers that loaded the old
// array finish on it (a foreign ref in it now finds nil, and the reader
// looks again in the new, empty array). It returns the bytes released. The caller
// holds the mutex; Clear holds every shard's, so no pair is left whose
// first record another shard still moves.
func (s *core) ResetLocked() int64 {
	old := s.arr.Load()
	released := indexBytes(old) + old.store.bytes()
	s.n = 0
	s.live.Store(0)
	s.foreign.releaseAll()
	s.publish(old, s.newArray(MinSlots, s.seeds.Uint64(), newStorage(s.layout)), 0)
	return released
}
