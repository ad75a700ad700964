package shard

import "unsafe"

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
	longest := 0
	old.each(func(b *bucket, i int, w uint64) {
		h := s.hash(&(*Node)(s.keyRec(old, refOf(w))).key)
		longest = max(longest, place(a, h, w, b.class(i)))
	})
	s.publish(old, a)
	return longest
}

// publish makes a the shard's array with one store: a reader loads either
// the old array or the complete new one.
func (s *core) publish(old, a *array) {
	a.gen = old.gen + 1
	s.overflowBase = a.overflow.n.Load()
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
		place(a, h, word(ref, stampOf(w)), b.class(i))
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
	s.publish(old, a)
	return m
}

// relocate moves a flow's record (and a pair's reply record) from src to
// dst and returns how many records moved.
func (s *core) relocate(from *storage, dst, src unsafe.Pointer) int {
	s.relocateOne(from, dst, src)
	if (*Node)(src).kind == Pair {
		size := s.layout.size
		s.relocateOne(from, unsafe.Add(dst, size), unsafe.Add(src, size))
		return 2
	}
	return 1
}

func (s *core) relocateOne(from *storage, dst, src unsafe.Pointer) {
	(*Node)(dst).key = (*Node)(src).key
	from.setForward(src, dst)
	s.move(dst, src)
}

// EvacuateLocked evacuates up to n of the current storage's chunks that
// have fallen to half live: their live records move to the tail, the slots
// that name them are pointed at the new homes in place (one store of the
// slot word each, so a reader finds the old copy or the new one), and the
// chunk is dropped. It moves at most sparseAt records per chunk, so a
// caller that evacuates one chunk per hold of the mutex holds it briefly.
// The caller folds the returned Moved as it folds a compaction's.
func (s *core) EvacuateLocked(n int) Moved { return s.evacuateLocked(n) }

func (s *core) evacuateLocked(n int) Moved {
	a := s.arr.Load()
	st := a.store
	m := Moved{layout: s.layout}
	for len(m.chunks) < n && len(st.sparse) > 0 {
		ci := st.sparse[len(st.sparse)-1]
		st.sparse = st.sparse[:len(st.sparse)-1]
		c := st.chunk(ci)
		if c == nil {
			continue // dropped since: its last record died
		}
		// Only the chunk being filled gains records, and a queued chunk
		// is never that one, so it is still at sparseAt or under.
		c.queued = false
		s.evacuate(a, c)
		m.chunks = append(m.chunks, c)
	}
	return m
}

// SettleLocked evacuates every chunk that has fallen to sparseAt live or
// under, so that the storage's bound holds again (records held ≤ 2 × live
// records + one chunk): a writer calls it before it lets go of the mutex.
// A write kills at most a few flows, so it finds at most a few chunks to
// evacuate, each of at most sparseAt moves. The caller folds the returned
// Moved as it folds a compaction's.
func (s *core) SettleLocked() Moved {
	if len(s.arr.Load().store.sparse) == 0 {
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
		kind := (*Node)(src).kind
		if kind == Reply {
			return // moves with its pair's first record
		}
		ni, dst := st.alloc(kind == Pair)
		moved += s.relocate(st, dst, src)
		s.repoint(a, &(*Node)(src).key, base+p, ni)
		if kind == Pair {
			reply := st.at(c, p+1)
			if rk := &(*Node)(reply).key; s.holds(a, rk) {
				s.repoint(a, rk, ReplyRef(base+p), ReplyRef(ni))
			}
			st.kill(reply)
		}
		st.kill(src) // the last one drops c
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
	s.publish(old, s.newArray(MinSlots, s.seeds.Uint64(), newStorage(s.layout)))
	return released
}
