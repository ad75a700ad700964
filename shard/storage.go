package shard

import (
	"math/bits"
	"reflect"
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

// Records live in chunks: up to 511 records and a header, in one heap
// object; a record's index is its chunk's directory index × 512 + its
// position, so the positions a chunk does not hold are never allocated.
// With a pointer-free record type the collector marks one object per
// chunk and scans only the header's pointer word.
//
// A chunk is a large object (over 32 KiB), so the Go allocator gives it
// pages of its own: once the chunk is garbage its pages go back whole,
// which a small object's would not (a span of three 26 KiB chunks of 256
// records stayed in use while any of the three lived, and kept up to three
// times their bytes in use after churn). A large object is rounded up to
// whole 8 KiB pages, so for a pointer-free record type the chunk is a
// block of 5 to 8 pages, whichever holds the most records per byte
// (layoutOf): 510 records of 96 bytes in 6 pages, 471 of 104. A record type
// with pointers needs the collector to know where they are, so its chunk
// is typed: 510 records after the header.
const (
	chunkBits = 9
	chunkLen  = 1 << chunkBits // the index space of one chunk
	maxRecs   = chunkLen - 1   // the most records a chunk holds
	pageBytes = 8 << 10        // the Go allocator's page
	// rawHeader is the room the header takes at the start of a chunk, raw
	// or typed: two cache lines, so that records start on a line. Every
	// chunk's records start there, so a record finds its chunk's header by
	// its position alone, whatever the chunk's kind (Forward).
	rawHeader = 128
)

// The evacuation threshold, as a fraction of a chunk's records: a chunk
// that is not being filled is queued for evacuation at sparseNum/sparseDen
// of them live or under (layout.sparse), and evacuated once the slack
// below is spent. Records held stay ≤ 16/13 × live records + one chunk
// (the dead ones outside the tail at most 1/8 of the live ones, or none
// queued and every other chunk over 13/16 live), which invariant 16 in
// docs/DESIGN.md states as 2 ×.
//
// The fraction trades memory for moves. Under churn that removes flows
// uniformly at random (the worst case: chunks decay evenly instead of
// dying whole) chunks settle at about (1−f)/ln(1/f) live and each removal
// costs about f/(1−f) moves. Measured at 100k live flows and 1M cycles
// (TestMemoryChurnAtConstantSize): at 1/2, 1.44 records held per live
// one, 1 move a removal, heap in use +31 % over the fill; at 3/4, 1.19, 3
// moves, +6 to +10 %; at 13/16, 1.15, 4.3 moves, +2 to +8 %; at 7/8,
// 1.11, 7 moves, +0 to +4 % (each chunk evacuated as it reached the
// threshold). With the slack and the sparsest first: 3.85 moves, +3 to
// +8 %. Flows that die young, the common case, empty chunks whole and move
// little.
const sparseNum, sparseDen = 13, 16

// The slack: a chunk at the threshold or under is evacuated only while
// the chunks other than the one being filled hold more dead records (and
// holes) than slackNum/slackDen of the live ones, and the sparsest such
// chunk goes first. A shard whose flows die in the order they came (a
// window of flows sliding forward, the common shape of churn) empties its
// chunks whole, oldest first: the few chunks draining at any time hold
// far fewer dead records than the slack, and nothing moves. Evacuating
// every chunk as it reached the threshold moved 13 of every 16 records
// such a shard held, once each: 12 % of BenchmarkMixed's time, and its
// lookups' cache lines. Under removals at random, the sparsest chunk
// holds the fewest records to move for the dead ones it frees (greedy
// cleaning, as a log-structured store's cleaner picks its segments).
// Dead records outside the tail stay ≤ slackNum/slackDen of the live
// ones while a queued chunk is there to evacuate; with none queued,
// every chunk but the tail is over the threshold: records held ≤ 16/13 ×
// live records + one chunk either way, within invariant 16's 2 ×.
const slackNum, slackDen = 1, 8

// chunkHeader starts every chunk, in a room of rawHeader bytes before the
// first record: the chunk's bookkeeping and the forwards of records that
// moved.
type chunkHeader struct {
	// fwd is nil until the chunk's records move; it then maps each moved
	// record's position to its new home, for Forward.
	fwd atomic.Pointer[[chunkLen]unsafe.Pointer]
	// Writer state, under the shard mutex.
	live   [chunkLen / 64]uint64 // which records a slot names
	index  uint32                // the chunk's place in its storage's directory
	nlive  uint16                // how many
	queued bool                  // on its storage's sparse queue
}

// A typed chunk is allocated with the owner's record type, so the
// collector knows what the records hold: for a record type with pointers.
// Its 510 records and 128-byte header take no more than 512 records'
// bytes for any record of 64 bytes or more. The shard's code reaches the
// records by offset from the header (storage.rec), which is what lets it
// be written without type parameters and compiled, inlined, in this
// package.
type chunk[E any] struct {
	hdr  chunkHeader
	_    [rawHeader - 80]byte
	recs [maxRecs - 1]E
}

// Raw chunks, for a pointer-free record type: the header, then words the
// records are laid in, the whole a number of pages.
type (
	rawChunk5 struct {
		hdr chunkHeader
		_   [rawHeader - 80]byte
		_   [(5*pageBytes - rawHeader) / 8]uint64 // the records
	}
	rawChunk6 struct {
		hdr chunkHeader
		_   [rawHeader - 80]byte
		_   [(6*pageBytes - rawHeader) / 8]uint64 // the records
	}
	rawChunk7 struct {
		hdr chunkHeader
		_   [rawHeader - 80]byte
		_   [(7*pageBytes - rawHeader) / 8]uint64 // the records
	}
	rawChunk8 struct {
		hdr chunkHeader
		_   [rawHeader - 80]byte
		_   [(8*pageBytes - rawHeader) / 8]uint64 // the records
	}
)

var _ [0]struct{} = [unsafe.Sizeof(chunkHeader{}) - 80]struct{}{}
var _ [0]struct{} = [unsafe.Sizeof(rawChunk6{}) - 6*pageBytes]struct{}{}

// A storage holds one generation of a shard's records. Records are only
// ever appended: a published record is never rewritten or reused, so a
// reader that holds a stale ref finds the record it meant, or one whose
// key does not match, or (once its chunk is dropped) no chunk, and then
// looks again. Memory comes back by moving: a chunk that falls to half
// live is evacuated (its survivors copied to the tail and its slots
// pointed at the copies, in place), and a drained shard is rebuilt with a
// new, dense storage.
type storage struct {
	// Read by lookups, written only when a chunk is added: alone on their
	// pair of cache lines, so that the writer state below, which every
	// insert and removal writes, does not take the line every lookup
	// reads base from away from the other cores (TestLookupWordsApart).
	//
	// dir is the chunk directory readers index. Entries are set to nil
	// when a chunk is dropped; growth publishes a new slice.
	dir atomic.Pointer[[]atomic.Pointer[chunkHeader]]
	// base is &(*dir)[0], republished with dir: what lookups index, one
	// dependent load shorter than going through the slice header.
	base atomic.Pointer[atomic.Pointer[chunkHeader]]
	// The owner's record layout, fixed at Init.
	layout *layout
	_      [readLines - 24]byte

	// Writer state, under the shard mutex.
	used   uint32   // records allocated: the tail's index
	live   int      // records a slot names
	sparse []uint32 // chunks at the evacuation threshold (layout.sparse) or under and not being filled, to evacuate
	// Mirrors for Stats, which reads them without the mutex.
	chunks  atomic.Int64 // chunks in the directory that are not dropped
	liveRec atomic.Int64 // live
}

// layout is what the shard's untyped code knows of the owner's records.
type layout struct {
	size     uintptr // of one record
	recs     uintptr // where a chunk's records start, from its header: rawHeader
	chunk    int64   // bytes of one chunk
	per      uint32  // records in one chunk
	sparse   uint32  // the live count at or under which a chunk is evacuated
	newChunk func() *chunkHeader
}

func layoutOf[E any]() *layout {
	size := recSize[E]()
	if HasPointers(reflect.TypeFor[E]()) {
		return typedLayout[E](size)
	}
	// A raw chunk of the page count that holds the most records per byte.
	l := &layout{size: size, recs: rawHeader}
	best := 0
	for pages := 5; pages <= 8; pages++ {
		n := min(maxRecs, (pages*pageBytes-rawHeader)/int(size))
		if best == 0 || n*best >= int(l.per)*pages { // on a tie, the larger chunk: fewer headers and evacuations
			best, l.per = pages, uint32(n)
		}
	}
	if l.per < 4 {
		return typedLayout[E](size) // records too large for pages to hold a few
	}
	l.chunk = int64(best * pageBytes)
	l.newChunk = [...]func() *chunkHeader{
		5: func() *chunkHeader { return &new(rawChunk5).hdr },
		6: func() *chunkHeader { return &new(rawChunk6).hdr },
		7: func() *chunkHeader { return &new(rawChunk7).hdr },
		8: func() *chunkHeader { return &new(rawChunk8).hdr },
	}[best]
	l.sparse = l.per * sparseNum / sparseDen
	return l
}

// typedLayout is the layout of typed chunks of E.
func typedLayout[E any](size uintptr) *layout {
	var c chunk[E]
	if unsafe.Offsetof(c.recs) != rawHeader {
		panic("shard: a typed chunk's records do not start at rawHeader")
	}
	l := &layout{size: size, recs: rawHeader, chunk: int64(unsafe.Sizeof(c)), per: uint32(len(c.recs)),
		newChunk: func() *chunkHeader { return &new(chunk[E]).hdr }}
	l.sparse = l.per * sparseNum / sparseDen
	return l
}

// HasPointers reports whether a value of type t can hold a pointer that
// the collector follows: such records go in typed chunks, and flowcache
// releases such values once their flows have left.
func HasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Chan, reflect.Func,
		reflect.Interface, reflect.Slice, reflect.String:
		return true
	case reflect.Array:
		return t.Len() > 0 && HasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if HasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

func newStorage(l *layout) *storage {
	st := &storage{layout: l}
	st.dir.Store(new([]atomic.Pointer[chunkHeader]))
	return st
}

// chunkAtIndex is the chunk with directory index ci, loaded through base,
// for lookups: ci comes from a ref the caller loaded from a slot word
// after the chunk was published, so it lies within the directory that
// base points into.
func (st *storage) chunkAtIndex(ci uint32) *chunkHeader {
	p := (*atomic.Pointer[chunkHeader])(unsafe.Add(unsafe.Pointer(st.base.Load()), uintptr(ci)*unsafe.Sizeof(atomic.Pointer[chunkHeader]{})))
	return p.Load()
}

// at is the record at position p of chunk c.
func (st *storage) at(c *chunkHeader, p uint32) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(c), st.layout.recs+uintptr(p)*st.layout.size)
}

// rec is the record at index i, or nil when its chunk was dropped (the
// caller looks again from the current array).
func (st *storage) rec(i uint32) unsafe.Pointer {
	c := st.chunkAtIndex(i >> chunkBits)
	if c == nil {
		return nil
	}
	return st.at(c, i&(chunkLen-1))
}

// chunk is the chunk with directory index ci; the caller holds the mutex.
func (st *storage) chunk(ci uint32) *chunkHeader { return (*st.dir.Load())[ci].Load() }

// noChunk is filling's answer when no chunk is being filled.
const noChunk = ^uint32(0)

// filling is the directory index of the chunk being filled: the one the
// next allocation writes into, or noChunk when the last chunk is full
// (the next allocation starts a new one; used then ends the chunk's index
// space). Only that chunk gains records, so it alone is exempt from being
// dropped or evacuated.
func (st *storage) filling() uint32 {
	if st.used&(chunkLen-1) == 0 {
		return noChunk
	}
	return st.used >> chunkBits
}

// grow appends a fresh chunk to the directory.
func (st *storage) grow() {
	dir := *st.dir.Load()
	if len(dir) >= MaxRecords>>chunkBits {
		panic("shard: storage has MaxRecords records")
	}
	var next []atomic.Pointer[chunkHeader]
	if len(dir) < cap(dir) {
		// Readers that loaded the shorter slice only follow refs it
		// covers, so extending into the shared array is safe.
		next = dir[:len(dir)+1]
	} else {
		next = make([]atomic.Pointer[chunkHeader], len(dir)+1, max(2*len(dir), 4))
		for i := range dir {
			next[i].Store(dir[i].Load())
		}
	}
	c := st.layout.newChunk()
	c.index = uint32(len(dir))
	next[len(dir)].Store(c)
	st.chunks.Add(1)
	// Publish the directory before any ref into the new chunk: base
	// first, then dir, since readers index it through either.
	st.base.Store(&next[0])
	st.dir.Store(&next)
}

// alloc returns the index of a fresh record (two consecutive ones for a
// pair), zero but for its position and kind. A pair starts at an even
// index, so both records share a chunk. The caller holds the mutex.
func (st *storage) alloc(pair bool) (uint32, unsafe.Pointer) {
	per := st.layout.per
	if p := st.used & (chunkLen - 1); pair && p != 0 {
		if (p+1)&^1 > per-2 {
			// No room for a pair in the chunk being filled: the rest of it
			// is holes, never live, and the pair starts the next chunk.
			st.used = (st.used | (chunkLen - 1)) + 1
			st.filled()
		} else if p&1 != 0 {
			st.used++ // a hole: never live
		}
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
	if st.used&(chunkLen-1) == per {
		st.used = (st.used | (chunkLen - 1)) + 1 // the chunk is full
	}
	c := st.chunk(i >> chunkBits)
	defer st.filled()
	p := i & (chunkLen - 1)
	e := st.at(c, p)
	head := (*Node)(e)
	head.pos = uint16(p)
	head.kind = Single
	c.setLive(p)
	st.addLive(1)
	if pair {
		head.kind = Pair
		r := (*Node)(st.at(c, p+1))
		r.pos = uint16(p + 1)
		r.kind = Reply
		c.setLive(p + 1)
		st.addLive(1)
	}
	return i, e
}

func (st *storage) addLive(n int) {
	st.live += n
	st.liveRec.Store(int64(st.live))
}

// startsChunk reports whether the next allocation (of a pair, or of one
// record) starts a new chunk.
func (st *storage) startsChunk(pair bool) bool {
	p := st.used & (chunkLen - 1)
	return p == 0 || pair && (p+1)&^1 > st.layout.per-2
}

// filled notes the chunk that an allocation has just completed: it is no
// longer being filled, so if its records died while it was, it is dropped
// or queued for evacuation now.
func (st *storage) filled() {
	if st.used&(chunkLen-1) == 0 {
		st.noteSparse(st.used>>chunkBits - 1)
	}
}

func (c *chunkHeader) setLive(p uint32) {
	c.live[p/64] |= 1 << (p % 64)
	c.nlive++
}

// kill counts the record e dead: no slot names it any more. A chunk left
// with no live record is dropped at once (a reader that still resolves a
// stale ref into it finds nil and looks again); one left at the threshold is
// queued for evacuation.
func (st *storage) kill(e unsafe.Pointer) {
	c := st.chunkOf(e)
	p := uint32((*Node)(e).pos)
	if c.live[p/64]&(1<<(p%64)) == 0 {
		panic("shard: a record killed twice")
	}
	c.live[p/64] &^= 1 << (p % 64)
	c.nlive--
	st.addLive(-1)
	st.noteSparse(c.index)
}

// noteSparse drops chunk ci if it is empty, or queues it for evacuation
// if it is at the threshold (layout.sparse) or under and not queued yet, unless it is the
// chunk being filled (filled notes that one once it is full). A chunk
// gets here however it fell that low: by deaths after it was full, or
// while it was filling.
func (st *storage) noteSparse(ci uint32) {
	if ci == st.filling() {
		return
	}
	c := st.chunk(ci)
	if c == nil {
		return
	}
	switch {
	case c.nlive == 0:
		if c.queued {
			st.unqueue(ci)
		}
		st.drop(c)
	case uint32(c.nlive) <= st.layout.sparse && !c.queued:
		c.queued = true
		st.sparse = append(st.sparse, ci)
	}
}

// deadHeld is the records held by the chunks other than the one being
// filled that no slot names: dead records, and the holes pairs leave.
func (st *storage) deadHeld() int {
	per := int(st.layout.per)
	held, live := int(st.chunks.Load())*per, st.live
	if ci := st.filling(); ci != noChunk {
		if c := st.chunk(ci); c != nil {
			held -= per
			live -= int(c.nlive)
		}
	}
	return held - live
}

// overHeld reports whether the storage holds more dead records than its
// slack (slackNum/slackDen of the live ones): whether evacuating a queued
// chunk is due.
func (st *storage) overHeld() bool {
	return st.deadHeld()*slackDen > st.live*slackNum
}

// takeSparsest takes the queued chunk with the fewest live records off
// the queue (nil when none is left).
func (st *storage) takeSparsest() *chunkHeader {
	best, bi := (*chunkHeader)(nil), 0
	for i, ci := range st.sparse {
		if c := st.chunk(ci); c != nil && (best == nil || c.nlive < best.nlive) {
			best, bi = c, i
		}
	}
	if best == nil {
		st.sparse = st.sparse[:0]
		return nil
	}
	last := len(st.sparse) - 1
	st.sparse[bi] = st.sparse[last]
	st.sparse = st.sparse[:last]
	return best
}

// unqueue takes a dropped chunk off the evacuation queue: queued chunks
// wait there until the slack is spent, and many of them empty first.
func (st *storage) unqueue(ci uint32) {
	for i, q := range st.sparse {
		if q == ci {
			last := len(st.sparse) - 1
			st.sparse[i] = st.sparse[last]
			st.sparse = st.sparse[:last]
			return
		}
	}
}

// drop takes an empty or evacuated chunk out of the directory. Readers
// holding its records keep them (the collector sees to that); readers
// resolving a stale ref into it find nil and look again.
func (st *storage) drop(c *chunkHeader) {
	(*st.dir.Load())[c.index].Store(nil)
	st.chunks.Add(-1)
}

func (st *storage) bytes() int64 {
	return st.chunks.Load()*st.layout.chunk +
		int64(cap(*st.dir.Load()))*int64(unsafe.Sizeof(atomic.Pointer[chunkHeader]{}))
}

// chunkOf finds record e's chunk from its position: the record is inside
// the chunk object, so the arithmetic stays inside one allocation.
func (st *storage) chunkOf(e unsafe.Pointer) *chunkHeader {
	return chunkAt(e, st.layout.recs, st.layout.size)
}

func chunkAt(e unsafe.Pointer, recs, size uintptr) *chunkHeader {
	off := recs + uintptr((*Node)(e).pos)*size
	return (*chunkHeader)(unsafe.Add(e, -int(off)))
}

// recSize is the size of a record; a pair's reply record is the next one.
func recSize[E any]() uintptr { var e E; return unsafe.Sizeof(e) }

// Next is the record after e in its chunk: a pair's reply record, given
// the pair's first record.
func Next[E any](e *E) *E { return (*E)(unsafe.Add(unsafe.Pointer(e), recSize[E]())) }

// Forward is the record that a move took e to, or nil when e has not
// moved. It takes no lock. The owner's protocol decides when a moved
// record's forward may be followed (see flowcache's moves): the shard
// stores the forward before it calls the owner's move function.
func Forward[E any](e *E) *E {
	f := chunkAt(unsafe.Pointer(e), rawHeader, recSize[E]()).fwd.Load()
	if f == nil {
		return nil
	}
	return (*E)(f[(*Node)(unsafe.Pointer(e)).pos])
}

// setForward records that src moved to dst, before the owner's move
// function runs; the caller holds the mutex.
func (st *storage) setForward(src, dst unsafe.Pointer) {
	c := st.chunkOf(src)
	f := c.fwd.Load()
	if f == nil {
		f = new([chunkLen]unsafe.Pointer)
		c.fwd.Store(f)
	}
	f[(*Node)(src).pos] = dst
}

// Moved is a set of chunks whose records moved: what the owner folds
// once a grace period has passed.
type Moved struct {
	layout *layout
	chunks []*chunkHeader
}

// Empty reports whether nothing moved.
func (m Moved) Empty() bool { return len(m.chunks) == 0 }

// Bytes is the memory the moved chunks hold: what stays reachable until
// the owner has folded them and lets go of m.
func (m Moved) Bytes() int64 {
	if m.layout == nil {
		return 0
	}
	return int64(len(m.chunks)) * m.layout.chunk
}

// Each calls fn for the old copy of every record that moved. The caller
// holds the shard mutex, so no move runs meanwhile and Forward chains are
// stable.
func (m Moved) Each(fn func(old unsafe.Pointer)) {
	for _, c := range m.chunks {
		f := c.fwd.Load()
		if f == nil {
			continue
		}
		for i := range f {
			if f[i] != nil {
				fn(unsafe.Add(unsafe.Pointer(c), m.layout.recs+uintptr(i)*m.layout.size))
			}
		}
	}
}

// EachMoved is Moved.Each with the owner's record type.
func EachMoved[E any](m Moved, fn func(old *E)) {
	m.Each(func(p unsafe.Pointer) { fn((*E)(p)) })
}

func (m *Moved) add(o Moved) {
	if m.layout == nil {
		m.layout = o.layout
	}
	m.chunks = append(m.chunks, o.chunks...)
}

// liveRecords calls fn for the position of every live record of c, in
// order.
func (c *chunkHeader) liveRecords(fn func(p uint32)) {
	for w, bitsLeft := range c.live {
		for ; bitsLeft != 0; bitsLeft &= bitsLeft - 1 {
			fn(uint32(w*64 + bits.TrailingZeros64(bitsLeft)))
		}
	}
}
