package flowcache

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrAttached: Table.Changes found a change feed attached already; a
// table has at most one.
var ErrAttached = errors.New("flowcache: a change feed is attached already")

// A change feed tells one consumer (a replication publisher) which flows
// changed, without costing the data path a store per packet, and without
// costing anything while no feed is attached:
//
//   - A flow stored (insert, pair, restore), moved to another class, given
//     a new value (SetValue), or leaving (markLeft, before its keys stop
//     naming it) is noted by the writer, under the shard locks it holds
//     already. Each costs an atomic load of Table.feed when no feed is
//     attached.
//   - A state swap is lock-free and an Entry does not know its table, so
//     CompareAndSwapState sets the noted bit (bit 62) of the state word in
//     the same compare-and-swap that stores the state, and only a swap that
//     finds the bit clear hands the flow to the attached feeds (stateSinks).
//     The feed clears the bit when it drains the flow, so a flow that swaps
//     ten times between two drains is handed over once. With no feed the
//     bit stays set after a flow's first swap, and a swap costs what it
//     did. The bit is part of the word that move copies, and State masks
//     it out with the class and the moved bit.
//   - A flow is noted once between two drains, at the source: a record
//     stored while a feed is attached gets the noted bit and the queued
//     bit (61: a note of the table's own is queued for it) with its first
//     state word, and a class move or restore sets both, so swaps, class
//     moves and restores of a flow not drained yet queue nothing. A flow
//     that leaves puts its cause (bits 56–58) on its record, under the
//     lock that unlinks it and before its keys stop naming it (before
//     store gives a replaced flow's key to its successor), and queues a
//     note only if queued is clear: otherwise Drain finds the cause on
//     the record under its note (records are never reused). So a record
//     the table noted that has no cause is the flow its first key names:
//     Drain reports it without looking the key up, unless it has moved
//     (the copy may still be being written until the move publishes
//     it), and looks up the keys of flows that left or moved and of
//     swaps (which may be another table's). Drain clears both bits when
//     it reports a flow.
//   - Notes go to a bounded queue, striped by the record's address so that
//     cores rarely share a lock. A full stripe drops the note and counts
//     it: the consumer sees Lost and resyncs (Resync walks every flow). A
//     dropped note of the table's own clears queued again, so that the
//     flow's leaving is noted.
//   - A note is 16 bytes: the record, and its key's table hash (which the
//     writer has) with the note's kind in the low three bits. Drain
//     coalesces without a map: the hashes, each with its note's place,
//     go to one reused slice of 8 bytes a note, radix-sorted, so that a
//     key's notes lie together; a key noted more than once is folded into
//     its first note, and the rest reported in the order noted, each once,
//     with what the table holds under its first key now, read when it is
//     reported; a flow that left is reported with its last cause. What a
//     change was is never queued, only that the flow changed, so notes may
//     arrive in any order. (A map of 40-byte keys held about 10 MB a
//     drain at 150k inserts a second, in the cache the consumer shares
//     with the writers.)
const noted = 1 << 62

// The state word's bits for the table's own notes.
const (
	// queued: a note of the table's own (a store, a class move, a
	// restore) is queued for this record and not drained yet. Set with
	// noted under the shard lock, when the note is pushed; cleared with
	// noted when the flow is drained.
	queued = 1 << 61
	// The cause of a flow that left while a feed was attached: set when
	// it leaves (retire), on the record, which is dead then.
	causeShift = 56
	causeMask  = 7 << causeShift
)

// stateSink receives the flows whose state a swap changed. Every attached
// feed is one; each keeps the flows of its own table (Drain checks).
type stateSink interface{ noteState(p unsafe.Pointer) }

// stateSinks are the attached feeds, for CompareAndSwapState. nil when
// none is.
var (
	stateSinks   atomic.Pointer[[]stateSink]
	stateSinksMu sync.Mutex
)

// noteState hands a flow whose swap set its noted bit to the attached
// feeds.
func noteState(p unsafe.Pointer) {
	if s := stateSinks.Load(); s != nil {
		for _, f := range *s {
			f.noteState(p)
		}
	}
}

// Changes is a table's change feed (Table.Changes): one consumer drains
// it. Drain, Resync and Close are for that one goroutine; the table's
// writers and workers note changes from any goroutine.
type Changes[V any] struct {
	t       *Table[V]
	stripes []noteStripe
	mask    uintptr
	per     int // capacity of each stripe
	lost    atomic.Bool
	closed  atomic.Bool

	// The consumer's.
	held    [][]note // each stripe's notes, from the last Drain to the next
	keys    []uint64
	drained atomic.Uint64 // read by Stats
}

// noteStripe is one stripe of the queue, with its counts, which only its
// lock guards (a shared counter would be a line every writer bounces).
type noteStripe struct {
	mu      sync.Mutex
	notes   []note
	noted   uint64
	dropped uint64
	_       [cacheLine - 48]byte
}

// note is one noted flow: a record that was stored, changed class or had
// its state swapped, or a flow that left, with its cause. 16 bytes: the
// record, and its key's table hash with what the note is in the low
// three bits, so that Drain can group a key's notes without reading the
// records the writers just wrote.
type note struct {
	p unsafe.Pointer // *Entry[V]
	h uint64         // the table hash of the record's key &^ tagMask | the tag
}

// A note's tag.
const (
	// tagStored: the table's own: a record stored, moved to another class
	// or restored. If the flow left since, its record says why.
	tagStored = 0
	// 1 to 5, a Cause: the table's own: a flow that left, for that cause,
	// after its last tagStored note was drained.
	//
	// tagSwap: a state swap, of any table's flow: check the table. Its
	// hash is 0 until Drain hashes the key (the swap does not know the
	// table, nor so its hash seed).
	tagSwap = 6
	tagMask = 7
)

func (n note) tag() uint64 { return n.h & tagMask }

// dirt is what Drain gathered of one key: the cause of a flow that left
// under it, if one did; the last of its records the table noted after
// that, whose own cause, if it left too, is the later one; and, when all
// it has is state swaps, the record of one (every feed hears every
// table's swaps: the key is this table's change only if the flow under
// it now is that record's).
type dirt struct {
	why   Cause
	rec   unsafe.Pointer
	state unsafe.Pointer
}

// Change is one flow in a Drain or a Resync: what the table holds under
// Key now.
type Change[V any] struct {
	Key FlowKey // the flow's first key
	// Flow is the flow stored under Key now, or nil when none is. It is
	// read as the table holds it: a consumer that is not a registered
	// worker copies what it needs before fn returns, and keeps no Flow.
	Flow *Entry[V]
	// Cause is why the flow under Key left, when Flow is nil and the feed
	// saw it leave; 0 otherwise.
	Cause Cause
}

// ChangeStats counts what a feed saw.
type ChangeStats struct {
	Noted     uint64 // notes queued
	Dropped   uint64 // notes dropped because the queue was full
	Reported  uint64 // changes Drain reported (Noted − Reported were coalesced or not the table's)
	Attached  bool
	QueueSize int
}

// Changes attaches a change feed to t, with room for queue notes between
// two Drains (at least 64; 0 means 1<<16). While it is attached, every
// flow stored, moved to another class, given a new value, swapped to
// another state, or gone, is noted, and Drain reports it. A table has at most one feed: a second
// gets ErrAttached; a closed table ErrClosed. Flows that swapped state
// before the feed was attached are not noted until the consumer's first
// Resync, which it runs first.
func (t *Table[V]) Changes(queue int) (*Changes[V], error) {
	t.mustInit()
	if queue == 0 {
		queue = 1 << 16
	}
	queue = max(queue, 64)
	n := 1 << bits.Len(uint(2*runtime.GOMAXPROCS(0)-1))
	c := &Changes[V]{t: t, stripes: make([]noteStripe, n), mask: uintptr(n - 1), per: max(queue/n, 1), held: make([][]note, n)}
	if t.closed.Load() {
		return nil, t.errClose
	}
	if !t.feed.CompareAndSwap(nil, c) {
		return nil, fmt.Errorf("%w: table %q", ErrAttached, t.name)
	}
	stateSinksMu.Lock()
	var s []stateSink
	if old := stateSinks.Load(); old != nil {
		s = slices.Clone(*old)
	}
	s = append(s, c)
	stateSinks.Store(&s)
	stateSinksMu.Unlock()
	return c, nil
}

// Close detaches the feed; the table notes nothing more. Idempotent.
func (c *Changes[V]) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.t.feed.CompareAndSwap(c, nil)
	stateSinksMu.Lock()
	var s []stateSink
	for _, f := range *stateSinks.Load() {
		if f != stateSink(c) {
			s = append(s, f)
		}
	}
	if len(s) == 0 {
		stateSinks.Store(nil)
	} else {
		stateSinks.Store(&s)
	}
	stateSinksMu.Unlock()
}

// Lost reports whether a note was dropped since the last Resync: the
// queue was full, so Drain cannot report every change, and the consumer
// should Resync.
func (c *Changes[V]) Lost() bool { return c.lost.Load() }

// Stats counts what the feed saw.
func (c *Changes[V]) Stats() ChangeStats {
	st := ChangeStats{Reported: c.drained.Load(), Attached: !c.closed.Load(), QueueSize: c.per * len(c.stripes)}
	for i := range c.stripes {
		s := &c.stripes[i]
		s.mu.Lock()
		st.Noted += s.noted
		st.Dropped += s.dropped
		s.mu.Unlock()
	}
	return st
}

// push queues n, or drops it and says so.
func (c *Changes[V]) push(n note) bool {
	// Stripe by the record's address: records of one chunk share a
	// stripe, records of different chunks (different cores' inserts,
	// mostly) spread.
	s := &c.stripes[(uintptr(n.p)>>12)*0x9e3779b97f4a7c15>>40&c.mask]
	s.mu.Lock()
	if len(s.notes) < c.per {
		s.notes = append(s.notes, n)
		s.noted++
		s.mu.Unlock()
		return true
	}
	s.dropped++
	s.mu.Unlock()
	if !c.lost.Load() {
		c.lost.Store(true)
	}
	return false
}

func (c *Changes[V]) noteState(p unsafe.Pointer) { c.push(note{p: p, h: tagSwap}) }

// noteStored notes e, of key hash h, just stored by store with its noted
// and queued bits set when c (t.feed, as store loaded it) is not nil. The
// shard locks are held.
func (t *Table[V]) noteStored(c *Changes[V], e *Entry[V], h uint64) {
	if c != nil && !c.push(note{p: unsafe.Pointer(e), h: h &^ tagMask}) {
		e.clearBits(queued) // dropped: its leaving must be noted
	}
}

// noteNew notes a flow, of key hash h, whose class or restored state
// changed under the shard locks, unless a note of the table's is queued
// for it already.
func (t *Table[V]) noteNew(e *Entry[V], h uint64) {
	c := t.feed.Load()
	if c == nil {
		return
	}
	for {
		w := e.state.Load()
		if w&queued != 0 {
			return // the queued note reports it as the table holds it then
		}
		if e.state.CompareAndSwap(w, w|noted|queued) {
			break
		}
	}
	if !c.push(note{p: unsafe.Pointer(e), h: h &^ tagMask}) {
		e.clearBits(queued)
	}
}

// markLeft puts why on the record of e, a flow about to leave, when a
// feed is attached: under its shard's lock, before its keys stop naming
// it, so that a record Drain finds with no cause is its first key's flow.
// A note of its leaving is queued unless a note of the table's is queued
// for it already (Drain then finds the cause on the record); h is the
// table hash of its first key. e is the flow's home.
func (t *Table[V]) markLeft(e *Entry[V], h uint64, why Cause) {
	c := t.feed.Load()
	if c == nil {
		return
	}
	for {
		w := e.state.Load()
		if e.state.CompareAndSwap(w, w&^causeMask|uint64(why)<<causeShift) {
			if w&queued == 0 {
				c.push(note{p: unsafe.Pointer(e), h: h&^tagMask | uint64(why)})
			}
			return
		}
	}
}

// Drain calls fn once for every flow noted since the last Drain, with
// what the table holds under its first key now, and returns how many it
// reported. It takes no table lock; fn must not call Drain or Resync.
//
// It coalesces without a map (see the top of this file): each note's
// hash, with the note's place in the low bits, goes to one reused slice
// of 8 bytes a note, which is radix-sorted so that a key's notes lie
// together; the notes of a key noted more than once are folded into its
// first, and what is left is reported in the order it was noted, reading
// the records in about the order they were written.
func (c *Changes[V]) Drain(fn func(Change[V])) int {
	total := 0
	for i := range c.stripes {
		s := &c.stripes[i]
		s.mu.Lock()
		got := s.notes
		s.notes = c.held[i][:0]
		s.mu.Unlock()
		c.held[i] = got
		total += len(got)
	}
	// The hash's top bits, then the note's place among all the stripes':
	// a run of one key's notes keeps the order they were gathered in (a
	// stripe's in the order they were pushed), so the last cause noted is
	// the one reported.
	low := uint(max(bits.Len(uint(total)), 3)) // the tag goes too
	keys := c.keys[:0]
	for _, got := range c.held {
		for i := range got {
			n := &got[i]
			if n.tag() == tagSwap {
				// A record's key never changes, whatever happened to the
				// flow since; the record itself stays readable (records
				// are never rewritten or reused).
				k := (*Entry[V])(n.p).Key()
				n.h = c.t.hash(&k)&^tagMask | tagSwap
			}
			keys = append(keys, n.h>>low<<low|uint64(len(keys)))
		}
	}
	sortByHash(keys)
	for i := 0; i < len(keys); {
		j := i + 1
		for j < len(keys) && keys[j]>>low == keys[i]>>low {
			j++
		}
		if j > i+1 {
			c.coalesce(keys[i:j], low)
		}
		i = j
	}
	c.keys = keys[:0]
	n := 0
	for _, got := range c.held {
		for _, nt := range got {
			if nt.p == nil {
				continue // folded into the key's first note
			}
			var d dirt
			switch tag := nt.tag(); tag {
			case tagStored:
				d.rec = nt.p
			case tagSwap:
				d.state = nt.p
			default:
				d.why = Cause(tag)
			}
			if ch, ok := c.change((*Entry[V])(nt.p).Key(), d); ok {
				fn(ch)
				n++
			}
		}
	}
	c.drained.Add(uint64(n))
	return n
}

// at is the note at place i among the held stripes'.
func (c *Changes[V]) at(i int) *note {
	for _, got := range c.held {
		if i < len(got) {
			return &got[i]
		}
		i -= len(got)
	}
	panic("flowcache: a note out of range")
}

// coalesce folds the notes of each key in run (places in the held
// stripes, sharing their hash's top bits, in the order noted) into its
// first: that one says what Drain gathered of the key (the last cause, or
// the swapped record to check), and the others are cleared (p nil). Keys
// that share the bits but differ, a collision, are told apart.
func (c *Changes[V]) coalesce(run []uint64, low uint) {
	mask := uint64(1)<<low - 1
	for len(run) > 0 {
		first := c.at(int(run[0] & mask))
		k := (*Entry[V])(first.p).Key()
		var d dirt
		m := 0
		for x, r := range run {
			nt := first
			if x > 0 {
				nt = c.at(int(r & mask))
				if (*Entry[V])(nt.p).Key() != k {
					run[m] = r // another key's: its turn next
					m++
					continue
				}
			}
			c.fold(&d, &k, *nt, x > 0)
			if x > 0 {
				*nt = note{}
			}
		}
		// The first note says it all now (any of the key's records is as
		// good for reading the key). A record the table noted after the
		// last leaving says why itself, if it left too.
		h := first.h &^ tagMask
		switch {
		case d.state != nil:
			*first = note{p: d.state, h: h | tagSwap}
		case d.rec != nil:
			*first = note{p: d.rec, h: h | tagStored}
		default:
			*first = note{p: first.p, h: h | uint64(d.why)}
		}
		run = run[:m]
	}
}

// fold adds note n of key k to what Drain gathered of k; seen says an
// earlier note of k was folded into d already.
func (c *Changes[V]) fold(d *dirt, k *FlowKey, n note, seen bool) {
	switch tag := n.tag(); tag {
	case tagStored:
		d.rec, d.state = n.p, nil
	case tagSwap:
		switch {
		case seen && (d.state == nil || d.state == n.p):
			return // the key is this table's already, or this swap is
		case seen:
			// Swaps of two records under one key (two tables with
			// feeds): keep the one that is this table's flow now.
			if cur := c.t.peek(k); cur == nil || cur.home() != (*Entry[V])(n.p).home() {
				return
			}
		}
		d.state = n.p
	default:
		d.why, d.rec, d.state = Cause(tag), nil, nil
	}
}

// sortByHash sorts w in place by a radix sort from the top byte down (an
// American flag sort: each pass permutes its part of w in place into 256
// buckets, whose write positions stay in the cache, where one pass on 16
// bits scattered its writes over all of w), with insertion sort for
// buckets of 24 or fewer. The values are hashes, so a bucket holds 1/256
// of its part: two passes leave a few values a bucket at 250k.
func sortByHash(w []uint64) { radixSort(w, 56) }

func radixSort(w []uint64, shift uint) {
	if len(w) <= 24 {
		for i := 1; i < len(w); i++ {
			for j := i; j > 0 && w[j] < w[j-1]; j-- {
				w[j], w[j-1] = w[j-1], w[j]
			}
		}
		return
	}
	var next, end [256]int
	for _, x := range w {
		next[x>>shift&0xff]++
	}
	at := 0
	for d := range next {
		at += next[d]
		end[d] = at
		next[d] = at - next[d] // the bucket's next free place
	}
	for d := range next {
		for next[d] < end[d] {
			x := w[next[d]]
			// Carry x to its bucket, and what was there to its own, until
			// something of bucket d comes back.
			for dx := int(x >> shift & 0xff); dx != d; dx = int(x >> shift & 0xff) {
				w[next[dx]], x = x, w[next[dx]]
				next[dx]++
			}
			w[next[d]] = x
			next[d]++
		}
	}
	if shift == 0 {
		return
	}
	start := 0
	for d := range end {
		radixSort(w[start:end[d]], shift-8)
		start = end[d]
	}
}

// change is what the table holds under k now; false for a key that had
// only state swaps of a record that is not the flow under k now (another
// table's flow, or one that left: its leaving was noted too). A flow's
// noted and queued bits are cleared before it is read, so a swap or a
// store after the read notes it again. A record the table noted, with no
// cause on it, is the flow its first key names (markLeft): reported as
// it is, without a lookup; otherwise one lookup per key.
func (c *Changes[V]) change(k FlowKey, d dirt) (Change[V], bool) {
	if d.rec != nil {
		// The noted record itself, never where a move copies it (the
		// copy's fields are written until the move publishes it): one
		// not moved yet is as good as what a lookup returns, which a
		// move may follow too; a moved one is looked up.
		r := (*Entry[V])(d.rec)
		if w := r.state.And(^uint64(noted | queued)); w&moved == 0 {
			why := Cause(w & causeMask >> causeShift)
			if why == 0 {
				return Change[V]{Key: k, Flow: r}, true
			}
			// It left: the key may name another flow now.
			d.why = why
		}
	}
	e := c.t.peek(&k)
	if d.state != nil && (e == nil || e.home() != (*Entry[V])(d.state).home()) {
		return Change[V]{}, false
	}
	if e != nil && e.Key() == k {
		// Live at the lookup; if it left since, and its leaving found a
		// note queued (so queued none), it has its cause now.
		if why := e.takeNoted(); why == 0 {
			return Change[V]{Key: k, Flow: e}, true
		} else {
			d.why = why
		}
	}
	// Gone, or k is now another flow's reply key: the flow whose first key
	// was k is gone.
	return Change[V]{Key: k, Cause: d.why}, true
}

// Resync calls fn for every flow in the table, as Range walks it, after
// clearing its noted bit, and clears Lost. A consumer runs it when it
// attaches and whenever Lost says notes were dropped; notes queued
// meanwhile are reported by the next Drain as usual.
func (c *Changes[V]) Resync(fn func(Change[V])) int {
	c.lost.Store(false)
	n := 0
	for e := range c.t.All() {
		e.home().clearNoted() // one that left meanwhile has a note queued
		fn(Change[V]{Key: e.Key(), Flow: e})
		n++
	}
	return n
}

// peek is the flow stored under k, without refreshing or counting it.
func (t *Table[V]) peek(k *FlowKey) *Entry[V] {
	h := t.hash(k)
	e, _, _ := t.shardOf(h).Lookup(h, skey(k))
	return e
}

// clearNoted clears e's noted and queued bits, on the flow's current
// record, and returns the cause on it: not 0 if the flow left.
func (e *Entry[V]) clearNoted() Cause {
	for {
		w := e.state.Load()
		if w&moved != 0 {
			e = e.forward()
			continue
		}
		if w&(noted|queued) == 0 || e.state.CompareAndSwap(w, w&^(noted|queued)) {
			return Cause(w & causeMask >> causeShift)
		}
	}
}

// takeNoted is clearNoted for a flow Drain found noted, as almost every
// flow it reports is: one atomic AND, which takes the line once, where a
// load and a compare-and-swap take it twice (shared, then owned). An AND
// on a record a move froze changes nothing that is read (the copy was
// made, or the move's compare-and-swap fails and copies again).
func (e *Entry[V]) takeNoted() Cause {
	for {
		w := e.state.And(^uint64(noted | queued))
		if w&moved == 0 {
			return Cause(w & causeMask >> causeShift)
		}
		e = e.forward()
	}
}

// clearBits clears bits of e's state word; e is the flow's home and
// cannot move (its shard's lock is held).
func (e *Entry[V]) clearBits(bits uint64) {
	for {
		w := e.state.Load()
		if e.state.CompareAndSwap(w, w&^bits) {
			return
		}
	}
}
