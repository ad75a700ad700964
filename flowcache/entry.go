package flowcache

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/shard"
)

// Entry is one flow, stored inline in its shard's storage (see "Storage"
// in the package documentation).
//
//	offset 0        40       44     48         56         56+V    +8      +16       +24
//	       | key    |pos,kind| hits | lastSeen | value V  | state | packets | bytes |
//	       | shard.Node               |
//	       |<-------------- what a hit reads -------------->|
//
// A hit reads the key, last seen (the refresh check) and the value, so
// they come first and together: with a 24-byte value those are the
// record's first 80 bytes, two cache lines for seven of the eight places
// a 104-byte record can start at in its chunk (records start on a line,
// and 104 is 13 × 8), where the bytes a hit read lay on three lines for
// half of them when the value came last. What Count and the state word's
// writers touch follows.
//
// Its key and value are fixed when the flow is stored: read them, never
// write through Value. What changes per packet is the table's: Count, and
// the state word with CompareAndSwapState. That is what lets the expiry
// pass move a flow to compact its shard's memory: a worker's *Entry stays
// usable until the worker's next Reader.Quiescent, and Count, State and
// CompareAndSwapState on that (old) copy act on the flow's current home.
type Entry[V any] struct {
	// node is the key, the record's kind and position, and Aux: the
	// sampled hit count of a flow's record, or the foreign ref of a
	// pair's reply record. First, so a *shard.Node is a *Entry.
	node     shard.Node
	lastSeen atomic.Int64 // ms since the Unix epoch, from the table's coarse clock
	value    V
	state    atomic.Uint64 // the program's state (low 32 bits) | class << classShift | noted | moved
	packets  atomic.Uint64
	bytes    atomic.Uint64
}

// The state word. Class and the moved bit share the word with the
// program's state so that one compare-and-swap orders a state transition
// against a class change and against a move (see move).
const (
	stateMask  = 1<<32 - 1
	classShift = 32
	classMask  = 0xf << classShift
	moved      = 1 << 63
)

// Key is the flow's first key: the one it was stored under by Insert, or
// the first key given to InsertPair.
func (e *Entry[V]) Key() FlowKey {
	// The shard stores the FlowKey's 40 bytes as its Key (skey): the same
	// bytes, viewed back.
	return *(*FlowKey)(unsafe.Pointer(e.node.Key()))
}

// Value is the flow's value, as it was when this record was stored. Read
// it; never write through it: the table may copy the flow to compact its
// memory, and a write through an old copy would be lost. Table.SetValue
// gives the flow a new value (in a new record). Keep what changes per
// packet in Count and the state word, or outside the table, keyed by
// something in V.
func (e *Entry[V]) Value() *V { return &e.value }

// Reply is the pair's second key (InsertPair): for a plain connection the
// first key's Reverse(), behind a NAT the translated reverse tuple. It
// reports false for a one-key flow.
func (e *Entry[V]) Reply() (FlowKey, bool) {
	if e.node.Kind() != shard.Pair {
		return FlowKey{}, false
	}
	return shard.Next(e).Key(), true
}

// Hits estimates how many lookups found this flow. It is sampled (see
// hitSample), so it is an unbiased estimate whose relative error is about
// sqrt(63/n) after n hits: ±8 % at 10 000 hits, ±0.8 % at a million.
func (e *Entry[V]) Hits() uint64 { return uint64(e.home().node.Aux.Load()) * hitSample }

// LastSeen is when a lookup or insert last touched the flow, by the
// table's coarse clock (exact to one Expire pass).
func (e *Entry[V]) LastSeen() time.Time { return time.UnixMilli(e.home().lastSeen.Load()) }

// Class is the flow's timeout class: 0 is the table's TTL, 1..n are
// Config.Timeouts.
func (e *Entry[V]) Class() int { return int(e.home().state.Load() & classMask >> classShift) }

// Count adds one packet of n bytes to the flow's counters: two atomic
// adds on the flow's record, exact, lock-free. Called on an old copy (the
// flow moved since the worker found it) it counts on the flow's current
// home.
func (e *Entry[V]) Count(n int) {
	if e.state.Load()&moved != 0 {
		e = e.home()
	}
	// A move between the load above and the adds below leaves them on the
	// old copy; the table folds them into the new home once a grace
	// period has passed (see fold), so they are not lost.
	e.packets.Add(1)
	e.bytes.Add(uint64(n))
}

// Packets is how many packets Count has counted. It is exact once a grace
// period has passed since the flow last moved; before, counts that landed
// on its old copy are still to be folded in.
func (e *Entry[V]) Packets() uint64 { return e.home().packets.Load() }

// Bytes is the sum of the sizes Count was given, exact as Packets is.
func (e *Entry[V]) Bytes() uint64 { return e.home().bytes.Load() }

// State is the word the program owns (a TCP state, an "assured" bit): 0
// when the flow is stored.
func (e *Entry[V]) State() uint32 { return uint32(e.home().state.Load()) }

// CompareAndSwapState sets the state word to new if it is old, and reports
// whether it did. It is lock-free, and every successful swap lands on the
// flow exactly once, whether the flow moves meanwhile or not.
func (e *Entry[V]) CompareAndSwapState(old, new uint32) bool {
	for {
		w := e.state.Load()
		if w&moved != 0 {
			// Frozen by a move: the state lives in the new home now.
			e = e.forward()
			continue
		}
		if uint32(w) != old {
			return false
		}
		// The noted bit goes in with the state (changes.go): the one
		// swap that sets it hands the flow to the change feeds, if any.
		if e.state.CompareAndSwap(w, w&^stateMask|uint64(new)|noted) {
			if w&noted == 0 {
				noteState(unsafe.Pointer(e))
			}
			return true
		}
	}
}

// forward is where a compaction moved e; e must be moved.
func (e *Entry[V]) forward() *Entry[V] { return shard.Forward(e) }

// home follows e's forwards to the flow's current record.
func (e *Entry[V]) home() *Entry[V] {
	for e.state.Load()&moved != 0 {
		e = e.forward()
	}
	return e
}

// move is the shard's move function during a compaction (CompactLocked):
// dst is the new home of src, zero but for its key, kind and position, and
// Forward(src) is already dst. The shard mutex is held, so no other writer
// touches src or dst; workers may still be counting and swapping on src.
//
// The protocol, and why each step is needed (each one has a test that
// fails without it, move_test.go):
//
//  1. Copy what never changes (the value) and what changes rarely.
//  2. Freeze src's state word: copy it to dst, then compare-and-swap the
//     moved bit into src, retrying if a swap got in between. A swap after
//     the freeze sees the moved bit and goes to dst; one before it was
//     copied. Without the freeze, a swap on src after the copy is lost.
//  3. Move the counters with Swap: dst gets what src had, and src counts
//     from zero what still lands on it (a Count that checked the moved bit
//     just before the freeze).
//  4. After a grace period, fold adds what landed on src to the flow's
//     current home. Without the grace period a late Count could land after
//     the fold; without the fold it is lost.
func (t *Table[V]) move(dst, src *Entry[V]) {
	if src.node.Kind() == shard.Reply {
		ref := src.node.Aux.Load()
		dst.node.Aux.Store(ref)
		if shard.IsForeign(ref) {
			k := src.Key()
			t.shardOf(t.hash(&k)).ForeignMove(ref, dst)
		}
		return
	}
	dst.value = src.value
	if t.faults.noFreeze {
		dst.state.Store(src.state.Load())
	} else {
		for {
			w := src.state.Load()
			dst.state.Store(w)
			if src.state.CompareAndSwap(w, w|moved) {
				break
			}
		}
	}
	// Last seen after the freeze: a refresh stores last seen and then
	// loads the state word (refresh), so one that finds src not yet moved
	// stored before the freeze, and the load below sees it; one that finds
	// it moved writes dst itself, and then the compare-and-swap keeps the
	// refresh instead of overwriting it with src's older time. So a
	// refresh lands on the flow's home whether or not its reader is
	// registered, and needs no fold.
	dst.lastSeen.CompareAndSwap(0, src.lastSeen.Load())
	dst.node.Aux.Add(src.node.Aux.Swap(0))
	dst.packets.Add(src.packets.Swap(0))
	dst.bytes.Add(src.bytes.Swap(0))
}

// fold adds to each moved flow's current home what landed on its old
// copies after the move: counts and sampled hits from workers that passed
// the moved check just before the freeze. (Last-seen refreshes need no
// fold: refresh follows the moved bit itself.) It runs under the shard
// mutex, once a grace period has passed since the compaction, so no
// worker still holds an old copy and the forward chains are stable.
func fold[V any](m shard.Moved) {
	shard.EachMoved(m, func(old *Entry[V]) {
		if old.node.Kind() == shard.Reply {
			return
		}
		home := old
		for f := shard.Forward(home); f != nil; f = shard.Forward(home) {
			home = f
		}
		if n := old.packets.Swap(0); n != 0 {
			home.packets.Add(n)
		}
		if n := old.bytes.Swap(0); n != 0 {
			home.bytes.Add(n)
		}
		if n := old.node.Aux.Swap(0); n != 0 {
			home.node.Aux.Add(n)
		}
	})
}
