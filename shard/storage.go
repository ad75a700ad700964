package shard

import (
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// Key is what the shard compares: 40 bytes seen as five words, so a key
// compares in five 64-bit loads. The shard never looks inside it.
type Key [5]uint64

// Equal compares two keys a word at a time. Written out, it inlines;
// == on the array calls the runtime's memequal.
func (k *Key) Equal(o *Key) bool {
	return k[0] == o[0] && k[1] == o[1] && k[2] == o[2] && k[3] == o[3] && k[4] == o[4]
}

// Node is the head of every record the shard stores: the owner's record
// type E must begin with a Node, so that a *E is a *Node. The key and the
// kind never change once the record is published; Aux is the owner's.
type Node struct {
	key  Key
	pos  uint16 // the record's index in its chunk, to find the chunk header
	kind Kind
	// Aux is a word the owner uses as it likes (flowcache: sampled hits
	// on a flow's record, the foreign ref on a reply record).
	Aux atomic.Uint32
}

// Kind says what a record is.
type Kind uint8

// The kinds of record.
const (
	Single Kind = iota // a one-key flow
	Pair               // the first record of a pair: the flow, under its first key
	Reply              // the second record of a pair: its reply key; the flow is the record before it
)

// Key is the record's key.
func (n *Node) Key() *Key { return &n.key }

// Kind is the record's kind.
func (n *Node) Kind() Kind { return n.kind }

// SetKey sets the key of a record that has not been published yet.
func (n *Node) SetKey(k *Key) { n.key = *k }

// Records live in chunks of 256. A chunk is one heap object: with a
// pointer-free record type the collector marks one object per 256 flows
// and scans only the header's pointer word.
const (
	chunkBits = 8
	chunkLen  = 1 << chunkBits
	// ChunkLen is how many records a storage allocates at a time.
	ChunkLen = chunkLen
	// sparseAt is the live count at or under which a chunk that is not
	// being filled is evacuated: its survivors move to the tail and the
	// chunk is dropped. At half, a chunk's survivors cost at most one
	// move each per flow that left it, and under steady churn chunks stay
	// about three quarters full.
	sparseAt = chunkLen / 2
)

// chunk is a block of records with a header.
type chunk[E any] struct {
	// fwd is nil until the chunk's records move; it then maps each moved
	// record's position to its new home, for Forward.
	fwd atomic.Pointer[[chunkLen]*E]
	// Writer state, under the shard mutex.
	index uint32                // the chunk's place in its storage's directory
	nlive uint32                // records a slot names
	live  [chunkLen / 64]uint64 // which ones
	_     [64 - 8 - 8 - 32]byte // records start on a new line
	recs  [chunkLen]E
}

// A storage holds one generation of a shard's records. Records are only
// ever appended: a published record is never rewritten or reused, so a
// reader that holds a stale ref finds the record it meant, or one whose
// key does not match, or (once its chunk is dropped) no chunk, and then
// looks again. Memory comes back by moving: a chunk that falls to half
// live is evacuated (its survivors copied to the tail and its slots
// pointed at the copies, in place), and a drained shard is rebuilt with a
// new, dense storage.
type storage[E any] struct {
	// dir is the chunk directory readers index. Entries are set to nil
	// when a chunk is dropped; growth publishes a new slice.
	dir atomic.Pointer[[]atomic.Pointer[chunk[E]]]
	// Writer state, under the shard mutex.
	used   uint32       // records allocated: the tail's index
	live   int          // records a slot names
	chunks atomic.Int64 // chunks in the directory that are not dropped; Stats reads it without the mutex
	sparse []uint32     // chunks that fell to sparseAt live or under, to evacuate
}

func newStorage[E any]() *storage[E] {
	st := &storage[E]{}
	st.dir.Store(new([]atomic.Pointer[chunk[E]]))
	return st
}

// rec is the record at index i, or nil when its chunk was dropped (the
// caller looks again from the current array).
func (st *storage[E]) rec(i uint32) *E {
	c := (*st.dir.Load())[i>>chunkBits].Load()
	if c == nil {
		return nil
	}
	return &c.recs[i&(chunkLen-1)]
}

// chunk is the chunk with directory index ci; the caller holds the mutex.
func (st *storage[E]) chunk(ci uint32) *chunk[E] { return (*st.dir.Load())[ci].Load() }

func (st *storage[E]) tail() uint32 { return (st.used - 1) >> chunkBits }

// grow appends a fresh chunk to the directory.
func (st *storage[E]) grow() {
	dir := *st.dir.Load()
	if len(dir) >= MaxRecords>>chunkBits {
		panic("shard: storage has MaxRecords records")
	}
	var next []atomic.Pointer[chunk[E]]
	if len(dir) < cap(dir) {
		// Readers that loaded the shorter slice only follow refs it
		// covers, so extending into the shared array is safe.
		next = dir[:len(dir)+1]
	} else {
		next = make([]atomic.Pointer[chunk[E]], len(dir)+1, max(2*len(dir), 4))
		for i := range dir {
			next[i].Store(dir[i].Load())
		}
	}
	c := &chunk[E]{index: uint32(len(dir))}
	next[len(dir)].Store(c)
	st.chunks.Add(1)
	if len(dir) > 0 {
		// The old tail may have emptied while it was filling.
		st.noteSparse(uint32(len(dir) - 1))
	}
	st.dir.Store(&next)
}

// alloc returns the index of a fresh record (two consecutive ones for a
// pair), zero but for its position and kind. A pair starts at an even
// index, so both records share a chunk. The caller holds the mutex.
func (st *storage[E]) alloc(pair bool) (uint32, *E) {
	if pair && st.used&1 != 0 {
		st.used++ // a hole: never live
	}
	n := uint32(1)
	if pair {
		n = 2
	}
	i := st.used
	if i&(chunkLen-1) == 0 {
		st.grow()
	}
	st.used += n
	c := st.chunk(i >> chunkBits)
	p := i & (chunkLen - 1)
	e := &c.recs[p]
	head := nodeOf(e)
	head.pos = uint16(p)
	head.kind = Single
	c.setLive(p)
	st.live++
	if pair {
		head.kind = Pair
		r := nodeOf(&c.recs[p+1])
		r.pos = uint16(p + 1)
		r.kind = Reply
		c.setLive(p + 1)
		st.live++
	}
	return i, e
}

func (c *chunk[E]) setLive(p uint32) {
	c.live[p/64] |= 1 << (p % 64)
	c.nlive++
}

// kill counts e's record dead: no slot names it any more. A chunk left
// with no live record is dropped at once (a reader that still resolves a
// stale ref into it finds nil and looks again); one left at sparseAt is
// queued for evacuation.
func (st *storage[E]) kill(e *E) {
	c := chunkOf(e)
	p := uint32(nodeOf(e).pos)
	if c.live[p/64]&(1<<(p%64)) == 0 {
		panic("shard: a record killed twice")
	}
	c.live[p/64] &^= 1 << (p % 64)
	c.nlive--
	st.live--
	st.noteSparse(c.index)
}

// noteSparse drops chunk ci if it is empty, or queues it for evacuation
// when it has just fallen to sparseAt, unless it is the tail.
func (st *storage[E]) noteSparse(ci uint32) {
	if ci == st.tail() {
		return
	}
	c := st.chunk(ci)
	if c == nil {
		return
	}
	switch c.nlive {
	case 0:
		st.drop(c)
	case sparseAt:
		st.sparse = append(st.sparse, ci)
	}
}

// drop takes an empty or evacuated chunk out of the directory. Readers
// holding its records keep them (the collector sees to that); readers
// resolving a stale ref into it find nil and look again.
func (st *storage[E]) drop(c *chunk[E]) {
	(*st.dir.Load())[c.index].Store(nil)
	st.chunks.Add(-1)
}

func (st *storage[E]) bytes() int64 {
	return st.chunks.Load()*int64(unsafe.Sizeof(chunk[E]{})) +
		int64(cap(*st.dir.Load()))*int64(unsafe.Sizeof(atomic.Pointer[chunk[E]]{}))
}

func nodeOf[E any](e *E) *Node { return (*Node)(unsafe.Pointer(e)) }

// recSize is the size of a record; a pair's reply record is the next one.
func recSize[E any]() uintptr { var e E; return unsafe.Sizeof(e) }

// Next is the record after e in its chunk: a pair's reply record, given
// the pair's first record.
func Next[E any](e *E) *E { return (*E)(unsafe.Add(unsafe.Pointer(e), recSize[E]())) }

// Prev is the record before e: a pair's first record, given its reply
// record. Pairs never straddle chunks, so both lie in one object.
func Prev[E any](e *E) *E { return (*E)(unsafe.Add(unsafe.Pointer(e), -int(recSize[E]()))) }

// chunkOf finds e's chunk from its position: the record is inside the
// chunk object, so the arithmetic stays inside one allocation.
func chunkOf[E any](e *E) *chunk[E] {
	var c chunk[E]
	off := unsafe.Offsetof(c.recs) + uintptr(nodeOf(e).pos)*recSize[E]()
	return (*chunk[E])(unsafe.Add(unsafe.Pointer(e), -int(off)))
}

// Forward is the record that a move took e to, or nil when e has not
// moved. It takes no lock. The owner's protocol decides when a moved
// record's forward may be followed (see flowcache's moves): the shard
// stores the forward before it calls the owner's move function.
func Forward[E any](e *E) *E {
	f := chunkOf(e).fwd.Load()
	if f == nil {
		return nil
	}
	return f[nodeOf(e).pos]
}

// setForward records that src moved to dst, before the owner's move
// function runs; the caller holds the mutex.
func setForward[E any](src, dst *E) {
	c := chunkOf(src)
	f := c.fwd.Load()
	if f == nil {
		f = new([chunkLen]*E)
		c.fwd.Store(f)
	}
	f[nodeOf(src).pos] = dst
}

// Moved is a set of chunks whose records moved: what the owner folds
// once a grace period has passed.
type Moved[E any] struct{ chunks []*chunk[E] }

// Empty reports whether nothing moved.
func (m Moved[E]) Empty() bool { return len(m.chunks) == 0 }

// Each calls fn for the old copy of every record that moved. The caller
// holds the shard mutex, so no move runs meanwhile and Forward chains are
// stable.
func (m Moved[E]) Each(fn func(old *E)) {
	for _, c := range m.chunks {
		f := c.fwd.Load()
		if f == nil {
			continue
		}
		for i := range f {
			if f[i] != nil {
				fn(&c.recs[i])
			}
		}
	}
}

func (m *Moved[E]) add(o Moved[E]) { m.chunks = append(m.chunks, o.chunks...) }

// liveRecords calls fn for the position of every live record of c, in
// order.
func (c *chunk[E]) liveRecords(fn func(p uint32)) {
	for w, bitsLeft := range c.live {
		for ; bitsLeft != 0; bitsLeft &= bitsLeft - 1 {
			fn(uint32(w*64 + bits.TrailingZeros64(bitsLeft)))
		}
	}
}
