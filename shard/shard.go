package shard

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/flowcache/flowcache/seed"
)

// array is one generation of a shard's index, with the storage its local
// refs index. A rebuild makes a new array; the old one is never written
// again but for slot stamps, which are advisory. A rebuild that only
// resizes or reseeds the index shares the storage; a compaction makes a
// new storage too.
type array struct {
	seed     uint64 // this generation's shard seed
	gen      uint64 // how many arrays the shard published before this one
	mask     uint64 // len(buckets) - 1
	buckets  []bucket
	store    *storage
	s        *core // the shard, for a Probe, which carries only its array
	overflow overflow
}

// overflow is an array's overflow buckets, allocated 64 at a time and
// named by index (bucket.next), so that bucket memory holds no pointer:
// the only pointers are the blocks' directory's.
type overflow struct {
	dir atomic.Pointer[[]*[overflowBlock]bucket] // replaced, never modified, under the mutex
	// n is written by every insert that links an overflow bucket: on a
	// line of its own, away from the words lookups read (the array's
	// seed, mask, buckets and store, and dir above).
	_ [readLines - 8]byte
	n atomic.Int64 // buckets handed out; Stats reads it without the mutex
}

const overflowBlock = 64

// next is the bucket after b in its chain, or nil.
func (a *array) next(b *bucket) *bucket {
	i := b.next.Load()
	if i == 0 {
		return nil
	}
	i--
	return &(*a.overflow.dir.Load())[i/overflowBlock][i%overflowBlock]
}

// follow is the overflow bucket of link i (b.next, not 0), for Find,
// without next's bounds check: the link was loaded before the directory,
// and a writer publishes a directory that holds a bucket's block before
// it links the bucket (newOverflow), so i's block is in it. Without the
// check Find calls nothing, and needs no frame.
func (a *array) follow(i uint32) *bucket {
	i--
	blocks := unsafe.SliceData(*a.overflow.dir.Load())
	blk := *(**[overflowBlock]bucket)(unsafe.Add(unsafe.Pointer(blocks), uintptr(i/overflowBlock)*unsafe.Sizeof(blocks)))
	return (*bucket)(unsafe.Add(unsafe.Pointer(blk), uintptr(i%overflowBlock)*unsafe.Sizeof(bucket{})))
}

// newOverflow hands out an empty overflow bucket and its chain link; the
// caller holds the mutex (or owns the unpublished array) and fills the
// bucket before it stores the link.
func (a *array) newOverflow() (*bucket, uint32) {
	i := a.overflow.n.Load()
	if i >= 1<<32-1 {
		panic("shard: overflow area full")
	}
	var dir []*[overflowBlock]bucket
	if p := a.overflow.dir.Load(); p != nil {
		dir = *p
	}
	if int(i/overflowBlock) >= len(dir) {
		// Readers only follow links to buckets that exist, so a new
		// directory with one more block can be published before use.
		next := make([]*[overflowBlock]bucket, len(dir)+1)
		copy(next, dir)
		next[len(dir)] = new([overflowBlock]bucket)
		a.overflow.dir.Store(&next)
		dir = next
	}
	a.overflow.n.Add(1)
	return &dir[i/overflowBlock][i%overflowBlock], uint32(i + 1)
}

// Hasher gives a key's table-level hash. The shard calls it only when it
// rebuilds, to place every key in the new array.
type Hasher func(*Key) uint64

// Config configures a shard.
type Config struct {
	// Slots is the initial slot capacity; it is rounded up to a power of
	// two, at least MinSlots.
	Slots int
	// Hash gives a key's hash; required.
	Hash Hasher
	// Seeds gives a fresh shard seed for every rebuild; required.
	Seeds *seed.Source
	// Reentered, when set, is called by a Lock that finds the mutex held
	// while the owner runs its program's code under it (SetBusyLocked),
	// before Lock waits: it panics if the caller is that code, which
	// would otherwise wait for itself forever.
	Reentered func()
}

const (
	// tidySlack and tidyMin bound the overflow buckets that churn may leave
	// linked beyond the keys in overflow buckets (each was linked for one,
	// so a fresh index of the same keys needs no more): one per tidySlack
	// keys (two bytes a key), and at least tidyMin. Past that an insert
	// rebuilds the index at its size (a tidy), which costs a pass over the
	// shard's keys once per about 40 × n/tidySlack inserts under uniform
	// churn: about 40 ns an insert, whatever the shard's size.
	tidySlack = 32
	tidyMin   = 16
	// MinSlots is the smallest slot capacity a shard is built with.
	MinSlots = 64
	// MaxChain is the overflow chain bound. At the highest load the shard
	// allows (3/4 of its slots) a bucket receives Poisson(3) keys, and the
	// chance that one receives more than 4×(1+4)=20 is about 1e-10: a chain
	// this long is an attack, not bad luck.
	MaxChain = 4
	// maxLoadNum/maxLoadDen is the load at which an insert grows the shard.
	maxLoadNum, maxLoadDen = 3, 4
	// floodRetries bounds the seeds a flood rebuild tries before it keeps
	// the last one: keys that collide for every seed share the full 64-bit
	// table hash, which only a caller who knows the table seed can build.
	floodRetries = 3
)

// Shard is one concurrent hash table of records of type E, which must
// begin with a Node. Its zero value is not usable; use Init.
//
// Lookups (Lookup, Locate and the Probe methods) take no lock and only
// load. Every method named *Locked needs the shard's mutex: call Lock
// first.
//
// The type parameter only types the records at the edges: every method
// that does the work belongs to the untyped core, so that it is compiled
// once, here, with its small helpers inlined. (Go does not inline this
// package's helpers into a generic body instantiated in another package,
// golang/go#56280's family; the lookup paid eight calls per key when the
// shard was generic throughout.)
type Shard[E any] struct {
	core
	_ [shardPad]byte
}

// shardPad rounds a Shard up to whole pairs of cache lines, so that in an
// array of shards no shard's writer words share a line, or the pair of
// lines x86's adjacent-line prefetcher pulls together, with the next
// shard's lookup words. Never 0: a zero-size last field would itself be
// padded.
const shardPad = readLines - unsafe.Sizeof(core{})%readLines

// readLines is the bytes of a pair of cache lines: what a shard keeps its
// lookup words in, alone.
const readLines = 128

var _ [0]struct{} = [unsafe.Sizeof(Shard[struct{}]{}) % readLines]struct{}{}

// core is the shard without its record type.
type core struct {
	// Read by every lookup and written only by Init (size) and a
	// rebuild (arr): alone on their pair of cache lines, so that writers
	// taking the mutex, and the counters they bump, never invalidate them
	// (TestLookupWordsApart).
	arr atomic.Pointer[array]
	// size is the layout's, copied here for the lookup path: a record is
	// at chunk + rawHeader + position × size (every layout's records
	// start at rawHeader).
	size uintptr
	_    [readLines - 16]byte

	// Under mu.
	mu      sync.Mutex
	n       int // occupied slots
	hash    Hasher
	seeds   *seed.Source
	layout  *layout
	foreign foreign
	move    func(dst, src unsafe.Pointer) // the owner's move function (see CompactLocked)
	// maxChain is MaxChain; tests of the attack set it negative to turn
	// the defence off (and with it the tidy rebuild, which also reseeds).
	maxChain int
	// insertsSinceFlood rate-limits flood rebuilds when keys collide for
	// every seed (see floodRetries).
	insertsSinceFlood int
	// overKeys is how many keys lie in the current array's overflow
	// buckets. Every overflow bucket was linked for a key, so more linked
	// buckets than keys in them are buckets that churn emptied (see
	// tidySlack); a table filling up links them for an honest reason.
	overKeys int64
	// busy is set while the owner runs its program's code with mu held,
	// and reentered is Config.Reentered (guard.go).
	busy      atomic.Bool
	reentered func()

	// Written under mu, read without it by Len and Stats.
	//
	// tally is the owner's counts (TallyLocked), kept per shard beside
	// the mutex its writers hold already, rather than on a line every
	// core's writers share.
	tally       [Tallies]atomic.Uint64
	live        atomic.Int64 // mirror of n
	grows       atomic.Uint64
	shrinks     atomic.Uint64
	floods      atomic.Uint64
	compactions atomic.Uint64
	evacuations atomic.Uint64
	moved       atomic.Uint64
	tidies      atomic.Uint64
}

// Init makes s an empty shard. move is the owner's move function: the
// shard calls it, with the mutex held, for every record it moves to give
// memory back (see CompactLocked).
func (s *Shard[E]) Init(cfg Config, move func(dst, src *E)) {
	if cfg.Hash == nil || cfg.Seeds == nil || move == nil {
		panic("shard: Config.Hash, Config.Seeds and a move function are required")
	}
	if recSize[E]() < unsafe.Sizeof(Node{}) {
		panic("shard: the record type must begin with a shard.Node")
	}
	s.move = func(dst, src unsafe.Pointer) { move((*E)(dst), (*E)(src)) }
	s.layout = layoutOf[E]()
	s.size = s.layout.size
	s.hash = cfg.Hash
	s.seeds = cfg.Seeds
	s.reentered = cfg.Reentered
	s.maxChain = MaxChain
	s.arr.Store(s.newArray(cfg.Slots, s.seeds.Uint64(), newStorage(s.layout)))
}

func bucketsFor(slots int) int {
	slots = max(slots, MinSlots)
	b := (slots + slotsPerBucket - 1) / slotsPerBucket
	return 1 << bits.Len(uint(b-1))
}

func (s *core) newArray(slots int, seed uint64, st *storage) *array {
	n := bucketsFor(slots)
	return &array{seed: seed, mask: uint64(n - 1), buckets: make([]bucket, n), store: st, s: s}
}

// Lock takes the shard's writer mutex. Lookups never take it. When the
// mutex is held while the owner runs its program's code (SetBusyLocked),
// Lock asks the owner whether the caller is that code before it waits
// (guard.go).
func (s *core) Lock() {
	if !s.mu.TryLock() {
		s.lockSlow()
	}
}

// TryLock takes the mutex if it is free.
func (s *core) TryLock() bool { return s.mu.TryLock() }

// Unlock releases the writer mutex.
func (s *core) Unlock() { s.mu.Unlock() }

// keyRec is the record that holds ref's key in array a, or nil when the
// ref is stale: its chunk was dropped after its records moved or died.
// The caller then looks again from the current array, where every live
// key's ref has been pointed at the record's new home.
func (s *core) keyRec(a *array, ref uint32) unsafe.Pointer {
	if ref&refForeign != 0 {
		return s.foreign.get(ref & refIndex)
	}
	c := a.store.chunkAtIndex((ref & refIndex) >> chunkBits)
	if c == nil {
		return nil
	}
	return unsafe.Add(unsafe.Pointer(c), rawHeader+uintptr(ref&(chunkLen-1))*s.size)
}

// flow is the record of the flow whose key rec holds: rec itself, or the
// pair's first record when rec is a reply record.
func (s *core) flow(rec unsafe.Pointer, ref uint32) unsafe.Pointer {
	if ref&(refReply|refForeign) != 0 {
		return unsafe.Add(rec, -int(s.size))
	}
	return rec
}

// Lookup finds the flow stored under key k, whose table hash is h: its
// record (for a pair's reply key, the pair's first record), the slot word
// that holds k and the word's value when it was read, for a refresh of its
// stamp with CompareAndSwap. It takes no lock and writes nothing, and is
// correct while writers and rebuilds run (see doc.go). The record is nil
// when k is not present.
func (s *Shard[E]) Lookup(h uint64, k *Key) (*E, *atomic.Uint64, uint64) {
	e, slot, w := s.core.lookup(h, k)
	return (*E)(e), slot, w
}

// Find is Lookup's common case, for Get: the record that holds k (for
// a pair's reply key, the pair's first record) when the first slot of a
// bucket of k's chain whose tag matches holds it, or nil when no tag of
// the chain matches (k is absent), with true; false when it cannot tell
// (a tag that matched another key, a dropped chunk or foreign entry), and
// the caller then calls Lookup. It returns no slot: Get needs the slot
// word once a clock tick at most (a refresh), and looks it up then. What
// it leaves out keeps it a leaf with few live values, which runs in
// registers without a frame. It is the untyped core's, so that a generic
// caller calls it without a dictionary: the caller converts the record.
//
// Its loads are sync/atomic's functions on the words of the typed
// atomics (word64, word32, wordPtr), not the typed atomics' methods: an
// inlined method leaves the compiler a mark that costs an instruction (a
// NOP) where nothing else is on the call's line, and the functions are
// intrinsics, which leave none. Six NOPs a hit fewer.
func (s *core) Find(h uint64, k *Key) (unsafe.Pointer, bool) {
	a := (*array)(atomic.LoadPointer(wordPtr(&s.arr)))
	hh := mix(h, a.seed)
	tags := tagOf(hh) * laneOnes
	b := (*bucket)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(a.buckets)), uintptr(hh&a.mask)*unsafe.Sizeof(bucket{})))
	for {
		// Tag first, then slot: writers publish a slot before its tag.
		if m := matchLanes(atomic.LoadUint64(word64(&b.tags)), tags); m != 0 {
			ref := uint32(atomic.LoadUint64(word64(b.slotOf(m))))
			var r unsafe.Pointer
			if ref&refForeign == 0 {
				// As in lookup (chunkAtIndex): the directory is loaded
				// after the slot word.
				st := a.store
				c := atomic.LoadPointer((*unsafe.Pointer)(unsafe.Add(atomic.LoadPointer(wordPtr(&st.base)), uintptr((ref&refIndex)>>chunkBits)*unsafe.Sizeof(unsafe.Pointer(nil)))))
				if c == nil {
					return nil, false
				}
				r = unsafe.Add(c, rawHeader+uintptr(ref&(chunkLen-1))*s.size)
			} else if r = s.foreign.getFast(ref & refIndex); r == nil {
				return nil, false
			}
			if !(*Node)(r).key.Equal(k) {
				return nil, false
			}
			return s.flow(r, ref), true
		}
		i := atomic.LoadUint32(word32(&b.next))
		if i == 0 {
			return nil, true
		}
		b = a.follow(i)
	}
}

// word64, word32 and wordPtr are the words that the typed atomics hold,
// for sync/atomic's functions (Find): each typed atomic's one field with
// a size, its value, is at offset 0 (the checks below: the typed atomic
// is as large as its value, so nothing else can be in it).
func word64(x *atomic.Uint64) *uint64 { return (*uint64)(unsafe.Pointer(x)) }

func word32(x *atomic.Uint32) *uint32 { return (*uint32)(unsafe.Pointer(x)) }

func wordPtr[T any](x *atomic.Pointer[T]) *unsafe.Pointer {
	return (*unsafe.Pointer)(unsafe.Pointer(x))
}

var (
	_ [0]struct{} = [unsafe.Sizeof(atomic.Uint64{}) - 8]struct{}{}
	_ [0]struct{} = [unsafe.Sizeof(atomic.Uint32{}) - 4]struct{}{}
	_ [0]struct{} = [unsafe.Sizeof(atomic.Pointer[array]{}) - unsafe.Sizeof(unsafe.Pointer(nil))]struct{}{}
)

func (s *core) lookup(h uint64, k *Key) (unsafe.Pointer, *atomic.Uint64, uint64) {
retry:
	for {
		a := s.arr.Load()
		hh := mix(h, a.seed)
		tag := tagOf(hh)
		b := a.bucket(hh)
		for {
			// Tag first, then slot: writers publish a slot before its tag.
			for m := match(b.tags.Load(), tag); m != 0; m &= m - 1 {
				slot := &b.slots[lane(m)&(slotsPerBucket-1)] // lane(m) < 4 for m != 0
				w := slot.Load()
				ref := refOf(w)
				var r unsafe.Pointer
				if ref&refForeign == 0 {
					// keyRec's local path, written out: the directory
					// is loaded after the slot word, so it covers the
					// ref (a writer publishes a chunk before its refs).
					c := a.store.chunkAtIndex((ref & refIndex) >> chunkBits)
					if c == nil {
						// A ref into a dropped chunk: look again in
						// the current array.
						continue retry
					}
					r = unsafe.Add(unsafe.Pointer(c), rawHeader+uintptr(ref&(chunkLen-1))*s.size)
				} else if r = s.foreign.get(ref & refIndex); r == nil {
					continue retry
				}
				if (*Node)(r).key.Equal(k) {
					return s.flow(r, ref), slot, w
				}
			}
			if b = a.next(b); b == nil {
				return nil, nil, 0
			}
		}
	}
}

// primary reports whether b is one of a's first buckets, not an
// overflow bucket.
func (a *array) primary(b *bucket) bool {
	base := uintptr(unsafe.Pointer(unsafe.SliceData(a.buckets)))
	return uintptr(unsafe.Pointer(b))-base < uintptr(len(a.buckets))*unsafe.Sizeof(bucket{})
}

// bucket is the first bucket of the chain of bucket hash hh. The index
// hh & a.mask is below len(a.buckets), a power of two whose mask it is,
// so the bucket is taken from the array's base without a bounds check.
func (a *array) bucket(hh uint64) *bucket {
	return (*bucket)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(a.buckets)), uintptr(hh&a.mask)*unsafe.Sizeof(bucket{})))
}

// Pos is where a key lives in the current array, found under the mutex.
// It is valid until the mutex is released or the shard is rebuilt.
type Pos struct {
	s *core
	a *array
	b *bucket
	i int
}

// Ref is the slot's ref.
func (p Pos) Ref() uint32 { return refOf(p.b.slots[p.i].Load()) }

// Stamp is the slot's stamp.
func (p Pos) Stamp() uint32 { return stampOf(p.b.slots[p.i].Load()) }

// SetStamp stores the slot's stamp.
func (p Pos) SetStamp(st uint32) { p.b.slots[p.i].Store(word(p.Ref(), st)) }

// Class is the slot's class byte.
func (p Pos) Class() uint8 { return p.b.class(p.i) }

// SetClass stores the slot's class byte.
func (p Pos) SetClass(c uint8) { p.b.setClass(p.i, c) }

// IsReply reports whether the slot holds a pair's reply key.
func (p Pos) IsReply() bool { return p.Ref()&(refReply|refForeign) != 0 }

func (p Pos) flow() unsafe.Pointer { return p.s.flow(p.s.keyRec(p.a, p.Ref()), p.Ref()) }

// FlowAt is the record of the flow whose key is at p (the pair's first
// record for a reply key).
func FlowAt[E any](p Pos) *E { return (*E)(p.flow()) }

// FindLocked is Lookup for a writer holding the mutex: where k is.
// Under the mutex every ref in the current array that a tag matches
// names a live chunk.
func (s *core) FindLocked(h uint64, k *Key) (Pos, bool) {
	return s.findIn(s.arr.Load(), h, k)
}

func (s *core) findIn(a *array, h uint64, k *Key) (Pos, bool) {
	hh := mix(h, a.seed)
	tag := tagOf(hh)
	for b := &a.buckets[hh&a.mask]; b != nil; b = a.next(b) {
		for m := match(b.tags.Load(), tag); m != 0; m &= m - 1 {
			i := lane(m)
			if (*Node)(s.keyRec(a, refOf(b.slots[i].Load()))).key.Equal(k) {
				return Pos{s, a, b, i}, true
			}
		}
	}
	return Pos{}, false
}

// AllocLocked allocates a record (two consecutive ones for a pair) in the
// current storage and returns it and its ref. The record is zero but for
// the shard's fields; the caller fills it, then publishes it with
// PlaceLocked or ReplaceLocked. For a pair, the reply record is Next(e)
// and its local ref is ReplyRef(ref).
//
// When the storage needs a new chunk and one has fallen to half live, it
// evacuates that chunk first (at most the threshold's moves), so memory stays
// flat under churn even where no pass runs; the owner folds what moved
// (see CompactLocked).
func (s *Shard[E]) AllocLocked(pair bool) (*E, uint32, Moved) {
	e, i, m := s.core.alloc(pair)
	return (*E)(e), i, m
}

func (s *core) alloc(pair bool) (unsafe.Pointer, uint32, Moved) {
	st := s.arr.Load().store
	var m Moved
	if len(st.sparse) > 0 && st.startsChunk(pair) {
		m = s.evacuateLocked(1)
	}
	i, e := st.alloc(pair)
	return e, i, m
}

// ReplyRef is the ref of a pair's reply record, given the pair's ref, for
// a reply key that hashes to the pair's own shard.
func ReplyRef(ref uint32) uint32 { return (ref + 1) | refReply }

// PlaceLocked stores a key whose table hash is h, which must not be
// present, with ref naming the record that holds it, and the slot's stamp
// and class byte. It may grow the shard, or rebuild it with a fresh seed
// when the key's chain is over its bound.
func (s *core) PlaceLocked(h uint64, ref, stamp uint32, class uint8) {
	a := s.arr.Load()
	chain := place(a, h, word(ref, stamp), class)
	if chain > 0 {
		s.overKeys++
	}
	s.n++
	s.live.Store(int64(s.n))
	s.insertsSinceFlood++
	// Grow first: a full shard has long chains for an honest reason.
	if s.n*maxLoadDen > len(a.buckets)*slotsPerBucket*maxLoadNum {
		s.grow(2 * s.n)
		s.grows.Add(1)
		return
	}
	if s.maxChain > 0 && a.overflow.n.Load()-s.overKeys > max(tidyMin, int64(s.n)/tidySlack) {
		// Overflow buckets stay linked once published (a reader may be
		// walking the chain), so under churn at a steady size the chains
		// creep up to the most keys each bucket ever held: linked buckets
		// outnumber the keys in them. Rebuild the index at its size: the
		// new one links only what its keys need. (Counting the buckets
		// linked since the last build instead fired a third of a fill's
		// rebuilds: a filling shard's chains grow with its load.)
		s.rebuild(len(a.buckets) * slotsPerBucket)
		s.tidies.Add(1)
		return
	}
	if s.maxChain > 0 && chain > s.maxChain && s.insertsSinceFlood > s.n/2 {
		// A chain this long at a load under 3/4 is a flood: move every
		// key under a fresh seed the sender cannot know.
		s.insertsSinceFlood = 0
		s.floods.Add(1)
		for range floodRetries {
			if s.rebuild(len(a.buckets)*slotsPerBucket) <= s.maxChain {
				break
			}
		}
	}
}

// place stores w in the first free slot of its chain, linking an overflow
// bucket when the chain is full, and returns how many overflow buckets the
// chain has. The caller holds the mutex (or owns a not yet published a).
func place(a *array, h uint64, w uint64, class uint8) int {
	hh := mix(h, a.seed)
	return placeHashed(a, tagOf(hh), uint32(hh), w, class)
}

// placeHashed is place for a key whose tag and low bucket-hash half
// (bucket.low) are known: its chain is the one of bucket low & a.mask,
// which a.mask < 1<<32 makes the bucket hash's own.
func placeHashed(a *array, tag uint64, low uint32, w uint64, class uint8) int {
	b := &a.buckets[uint64(low)&a.mask]
	depth := 0
	for {
		if f := free(b.tags.Load()); f != 0 {
			b.fill(lane(f), tag, w, class, low)
			return depth
		}
		next := a.next(b)
		if next == nil {
			nb, link := a.newOverflow()
			nb.fill(0, tag, w, class, low)
			// Fill the bucket before linking it: a reader that follows
			// the link sees a complete bucket.
			b.next.Store(link)
			return depth + 1
		}
		b = next
		depth++
	}
}

// ReplaceLocked points the slot at p at another record holding the same
// key, with a new stamp and class: one store of the slot word, so a reader
// finds the old record or the new one, never neither.
func (s *core) ReplaceLocked(p Pos, ref, stamp uint32, class uint8) {
	p.b.setClass(p.i, class)
	p.b.slots[p.i].Store(word(ref, stamp))
}

// ClearLocked removes the key at p. The record stays where it is for the
// readers that hold it; KillLocked counts it dead when no slot names it.
func (s *core) ClearLocked(p Pos) {
	p.b.clear(p.i)
	if !p.a.primary(p.b) {
		s.overKeys--
	}
	s.n--
	s.live.Store(int64(s.n))
}

// KillLocked counts e's record dead (and its reply record, for a pair):
// no slot names it any more. It stays where it is for the readers that
// hold it; its chunk is dropped or evacuated once enough of it is dead.
func (s *Shard[E]) KillLocked(e *E) { s.core.kill(unsafe.Pointer(e)) }

func (s *core) kill(e unsafe.Pointer) {
	st := s.arr.Load().store
	if (*Node)(e).kind == Pair {
		st.kill(unsafe.Add(e, s.layout.size))
	}
	st.kill(e)
}

// Len is the number of occupied slots. It is exact under the mutex and a
// recent value without it.
func (s *core) Len() int { return int(s.live.Load()) }

// StorageLocked describes the current storage: live records, chunks
// held, and the length of its chunk directory (dropped chunks included);
// the caller holds the mutex.
func (s *core) StorageLocked() (live, chunks, dir int) {
	st := s.arr.Load().store
	return st.live, int(st.chunks.Load()), len(*st.dir.Load())
}

// Slots is the slot capacity of the current array, overflow not counted.
func (s *core) Slots() int { return len(s.arr.Load().buckets) * slotsPerBucket }

// Bytes is the memory the shard holds: the index (overflow included), the
// storage and the foreign table. Under the mutex it is exact.
func (s *core) Bytes() int64 {
	a := s.arr.Load()
	return indexBytes(a) + a.store.bytes() + s.foreign.bytes()
}

func indexBytes(a *array) int64 {
	over := int64(0)
	if p := a.overflow.dir.Load(); p != nil {
		over = int64(len(*p)) * overflowBlock
	}
	return (int64(len(a.buckets)) + over) * int64(unsafe.Sizeof(bucket{}))
}

// Tallies is how many counts a shard keeps for its owner.
const Tallies = 6

// TallyLocked adds n to the owner's count i (0 ≤ i < Tallies): flowcache
// counts the flows a write inserted, replaced, removed, evicted or
// refused in the shard the write holds, where its writers already own
// the cache line, instead of in counters every core's writers write. The
// caller holds the mutex; n may be a negative number's two's complement.
func (s *core) TallyLocked(i int, n uint64) { s.tally[i].Add(n) }

// Tally is the owner's count i, read without the mutex: a recent value.
func (s *core) Tally(i int) uint64 { return s.tally[i].Load() }

// Counts is what a shard has done, for Stats.
type Counts struct {
	Grows, Shrinks, Floods, Compactions, Evacuations, Moved, Tidies uint64
}

// Counts returns the shard's rebuild counters.
func (s *core) Counts() Counts {
	return Counts{
		Grows: s.grows.Load(), Shrinks: s.shrinks.Load(), Floods: s.floods.Load(),
		Compactions: s.compactions.Load(), Evacuations: s.evacuations.Load(), Moved: s.moved.Load(),
		Tidies: s.tidies.Load(),
	}
}

// Generation counts the arrays the shard has published: it changes on
// every rebuild and reset. A count, not the array's address, because a
// freed array's address can come back for a new one.
func (s *core) Generation() uint64 { return s.arr.Load().gen }

// Records is how many records the current storage holds room for (its
// chunks, dropped ones not counted: ChunkRecords each) and how many of
// them a slot names. It takes no lock.
func (s *core) Records() (held, live int64) {
	st := s.arr.Load().store
	return st.chunks.Load() * int64(st.layout.per), st.liveRec.Load()
}

// ChunkBytes is the size of one chunk of the shard's storage.
func (s *core) ChunkBytes() int64 { return s.layout.chunk }

// ChunkRecords is how many records one chunk of the shard's storage
// holds: up to 511, as many as fit the chunk's pages (see layoutOf).
func (s *core) ChunkRecords() int { return int(s.layout.per) }
