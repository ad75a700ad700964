package shard

import "unsafe"

// RenewLocked moves the live flow whose record is e (a one-key flow's, or
// a pair's first record, with its reply record) to fresh records at the
// tail of the current storage, as an evacuation moves a record, but with
// move in place of the owner's move function: flowcache gives a flow a
// new value this way (SetValue), so that no reader sees a value half
// written. The forward is recorded before move runs; the slots of the
// flow's keys in this shard are then pointed at the new records in place,
// one compare-and-swap each (a reader finds the old record or the new
// one), and the old records are counted dead. A reply key in another
// shard names its record through that shard's foreign table, which move
// points at the new reply record, as the owner's move function does. It
// returns the new record and what moved, which the owner folds after a
// grace period as it folds a compaction's. The caller holds the mutex.
func (s *Shard[E]) RenewLocked(e *E, move func(dst, src *E)) (*E, Moved) {
	src := unsafe.Pointer(e)
	a := s.arr.Load()
	c := a.store.chunkOf(src)
	ref := c.index<<chunkBits | uint32((*Node)(src).pos)
	dst, _ := s.moveLive(a, ref, src, func(dst, src unsafe.Pointer) { move((*E)(dst), (*E)(src)) })
	return (*E)(dst), Moved{layout: s.layout, chunks: []*chunkHeader{c}}
}

// moveLive moves the live flow whose record is src, with local ref ref,
// to the tail of a's storage with move, repoints the slots that name it
// in a, and counts the old records dead (dropping their chunk if they
// were its last). It returns the new record and how many records moved.
func (s *core) moveLive(a *array, ref uint32, src unsafe.Pointer, move func(dst, src unsafe.Pointer)) (unsafe.Pointer, int) {
	st := a.store
	kind := (*Node)(src).kind
	ni, dst := st.alloc(kind == Pair)
	moved := s.relocateWith(st, dst, src, move)
	s.repoint(a, &(*Node)(src).key, ref, ni)
	if kind == Pair {
		reply := unsafe.Add(src, s.layout.size)
		if rk := &(*Node)(reply).key; s.holds(a, rk) {
			s.repoint(a, rk, ReplyRef(ref), ReplyRef(ni))
		}
		st.kill(reply)
	}
	st.kill(src)
	return dst, moved
}

// relocateWith moves a flow's record (and a pair's reply record) from src
// to dst with move, recording each forward first, and returns how many
// records moved.
func (s *core) relocateWith(from *storage, dst, src unsafe.Pointer, move func(dst, src unsafe.Pointer)) int {
	s.relocateOneWith(from, dst, src, move)
	if (*Node)(src).kind == Pair {
		size := s.layout.size
		s.relocateOneWith(from, unsafe.Add(dst, size), unsafe.Add(src, size), move)
		return 2
	}
	return 1
}

func (s *core) relocateOneWith(from *storage, dst, src unsafe.Pointer, move func(dst, src unsafe.Pointer)) {
	(*Node)(dst).key = (*Node)(src).key
	from.setForward(src, dst)
	move(dst, src)
}
