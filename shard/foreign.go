package shard

import (
	"sync/atomic"
	"unsafe"
)

// foreignBits sizes the blocks of the foreign table: foreignLen entries
// each.
const foreignBits = 8
const foreignLen = 1 << foreignBits

type foreignBlock [foreignLen]atomic.Pointer[Node]

// foreign is the table a shard keeps for keys whose record another shard
// stores: the reply key of a pair whose first key hashes to another shard.
// A slot holding such a key has a foreign ref, whose index names an entry
// here, which points at the reply record.
//
// Entries are real pointers, so the record they point at stays valid for a
// reader that loaded it, whatever the other shard does. The entry of a
// pair is written only under the mutex of the shard that stores the pair
// (the home shard): when the pair is inserted and removed (the caller then
// holds both shards' mutexes) and when a compaction of the home shard moves
// it. Blocks are never moved or freed, so the home shard may write an
// entry while this shard's own writers append blocks.
type foreign struct {
	dir  atomic.Pointer[[]*foreignBlock] // replaced, never modified, under mu
	n    uint32                          // entries handed out, under mu
	free []uint32                        // entries given back, under mu
}

func (f *foreign) get(i uint32) unsafe.Pointer {
	return unsafe.Pointer((*f.dir.Load())[i>>foreignBits][i&(foreignLen-1)].Load())
}

// getFast is get without the directory's bounds check, for Find: the
// ref that names entry i was loaded before the directory, and alloc
// publishes a directory that holds an entry's block before it hands the
// entry out.
func (f *foreign) getFast(i uint32) unsafe.Pointer {
	blocks := unsafe.SliceData(*f.dir.Load())
	blk := *(**foreignBlock)(unsafe.Add(unsafe.Pointer(blocks), uintptr(i>>foreignBits)*unsafe.Sizeof(blocks)))
	return unsafe.Pointer(blk[i&(foreignLen-1)].Load())
}

func (f *foreign) slot(i uint32) *atomic.Pointer[Node] {
	return &(*f.dir.Load())[i>>foreignBits][i&(foreignLen-1)]
}

// alloc hands out an entry pointing at e; the caller holds the mutex.
func (f *foreign) alloc(e unsafe.Pointer) uint32 {
	var i uint32
	if n := len(f.free); n > 0 {
		i = f.free[n-1]
		f.free = f.free[:n-1]
	} else {
		i = f.n
		f.n++
		if i&refIndex != i {
			panic("shard: foreign table full")
		}
		var dir []*foreignBlock
		if p := f.dir.Load(); p != nil {
			dir = *p
		}
		if int(i>>foreignBits) >= len(dir) {
			next := make([]*foreignBlock, len(dir)+1)
			copy(next, dir)
			next[len(dir)] = new(foreignBlock)
			f.dir.Store(&next)
		}
	}
	f.slot(i).Store((*Node)(e))
	return i
}

func (f *foreign) release(i uint32) {
	// Clear the entry: it is a real pointer, and left in place it would
	// keep the old reply record's whole chunk (or, after a compaction or
	// a reset, the whole old storage) reachable until the entry is handed
	// out again. A reader that loaded the foreign ref before the removal
	// finds nil and looks again from the current array, where the key is
	// gone: the removal was concurrent, so a miss is linearizable.
	f.slot(i).Store(nil)
	f.free = append(f.free, i)
}

func (f *foreign) releaseAll() {
	f.free = f.free[:0]
	for i := f.n; i > 0; i-- {
		f.slot(i - 1).Store(nil)
		f.free = append(f.free, i-1)
	}
}

func (f *foreign) bytes() int64 {
	p := f.dir.Load()
	if p == nil {
		return 0
	}
	return int64(len(*p)) * int64(unsafe.Sizeof(foreignBlock{}))
}

// ForeignAllocLocked gives the reply record e, stored by another shard,
// a foreign ref in this shard; place the ref with PlaceLocked. The caller
// holds this shard's mutex and the home shard's.
func (s *Shard[E]) ForeignAllocLocked(e *E) uint32 {
	return refForeign | s.foreign.alloc(unsafe.Pointer(e))
}

// ForeignReleaseLocked gives back a foreign ref whose slot was cleared; the
// caller holds this shard's mutex.
func (s *core) ForeignReleaseLocked(ref uint32) { s.foreign.release(ref & refIndex) }

// ForeignMove points the foreign ref at the reply record's new home; the
// caller holds the mutex of the shard that stores the record (not
// necessarily this one's: see the foreign type).
func (s *Shard[E]) ForeignMove(ref uint32, e *E) {
	s.foreign.slot(ref & refIndex).Store((*Node)(unsafe.Pointer(e)))
}

// IsForeign reports whether ref is a foreign ref.
func IsForeign(ref uint32) bool { return ref&refForeign != 0 }
