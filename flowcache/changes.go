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
//   - A flow stored (insert, pair, restore) or moved to another class is
//     noted by the writer, under the shard locks it holds already; a flow
//     that leaves, where the table hands it to OnRemove (retire). Each
//     costs an atomic load of Table.feed when no feed is attached.
//   - A state swap is lock-free and an Entry does not know its table, so
//     CompareAndSwapState sets the noted bit (bit 62) of the state word in
//     the same compare-and-swap that stores the state, and only a swap that
//     finds the bit clear hands the flow to the attached feeds (stateSinks).
//     The feed clears the bit when it drains the flow, so a flow that swaps
//     ten times between two drains is handed over once. With no feed the
//     bit stays set after a flow's first swap, and a swap costs what it
//     did. The bit is part of the word that move copies, and State masks
//     it out with the class and the moved bit.
//   - Notes go to a bounded queue, striped by the record's address so that
//     cores rarely share a lock. A full stripe drops the note and counts
//     it: the consumer sees Lost and resyncs (Resync walks every flow).
//   - Drain coalesces: each flow noted since the last Drain is reported
//     once, with what the table holds under its first key now, read when
//     it is reported; a flow that left is reported with its last cause.
//     What a change was is never queued, only that the flow changed, so
//     notes may arrive in any order.
const noted = 1 << 62

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
	dirty   map[FlowKey]dirt
	spare   []note
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
// its state swapped, or a flow that left, with its cause.
type note struct {
	p     unsafe.Pointer // *Entry[V]
	cause Cause          // 0: stored or changed
	state bool           // from a state swap: check the table and clear the noted bit
}

// dirt is what Drain gathered of one key: the cause of a flow that left
// under it, if one did; and, when all it has is state swaps, the record
// of one (every feed hears every table's swaps: the key is this table's
// change only if the flow under it now is that record's).
type dirt struct {
	why   Cause
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
// flow stored, moved to another class, swapped to another state, or gone,
// is noted, and Drain reports it. A table has at most one feed: a second
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
	c := &Changes[V]{t: t, stripes: make([]noteStripe, n), mask: uintptr(n - 1), per: max(queue/n, 1), dirty: map[FlowKey]dirt{}}
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

func (c *Changes[V]) push(n note) {
	// Stripe by the record's address: records of one chunk share a
	// stripe, records of different chunks (different cores' inserts,
	// mostly) spread.
	s := &c.stripes[(uintptr(n.p)>>12)*0x9e3779b97f4a7c15>>40&c.mask]
	s.mu.Lock()
	if len(s.notes) < c.per {
		s.notes = append(s.notes, n)
		s.noted++
		s.mu.Unlock()
		return
	}
	s.dropped++
	s.mu.Unlock()
	if !c.lost.Load() {
		c.lost.Store(true)
	}
}

func (c *Changes[V]) noteState(p unsafe.Pointer) { c.push(note{p: p, state: true}) }

// noteNew notes a stored flow, or one whose class or restored state
// changed under the shard locks.
func (t *Table[V]) noteNew(e *Entry[V]) {
	if c := t.feed.Load(); c != nil {
		c.push(note{p: unsafe.Pointer(e)})
	}
}

// noteGone notes flows that left, with their causes.
func (t *Table[V]) noteGone(gs []gone[V]) {
	if c := t.feed.Load(); c != nil {
		for _, g := range gs {
			c.push(note{p: unsafe.Pointer(g.e), cause: g.why})
		}
	}
}

// Drain calls fn once for every flow noted since the last Drain, with
// what the table holds under its first key now, and returns how many it
// reported. It takes no table lock; fn must not call Drain or Resync.
func (c *Changes[V]) Drain(fn func(Change[V])) int {
	clear(c.dirty)
	for i := range c.stripes {
		s := &c.stripes[i]
		s.mu.Lock()
		got := s.notes
		s.notes = c.spare[:0]
		s.mu.Unlock()
		for _, n := range got {
			// A record's key never changes, whatever happened to the flow
			// since; the record itself stays readable (records are
			// never rewritten or reused).
			k := (*Entry[V])(n.p).Key()
			d, seen := c.dirty[k]
			switch {
			case n.cause != 0:
				d.why, d.state = n.cause, nil
			case n.state:
				switch {
				case seen && (d.state == nil || d.state == n.p):
					continue // the key is this table's already, or this swap is
				case seen:
					// Swaps of two records under one key (two tables with
					// feeds): keep the one that is this table's flow now.
					if cur := c.t.peek(&k); cur == nil || cur.home() != (*Entry[V])(n.p).home() {
						continue
					}
				}
				d.state = n.p
			default:
				d.state = nil
			}
			c.dirty[k] = d
		}
		c.spare = got[:0]
	}
	n := 0
	for k, d := range c.dirty {
		if ch, ok := c.change(k, d); ok {
			fn(ch)
			n++
		}
	}
	c.drained.Add(uint64(n))
	return n
}

// change is what the table holds under k now; false for a key that had
// only state swaps of a record that is not the flow under k now (another
// table's flow, or one that left: its leaving was noted too). A flow's
// noted bit is cleared before it is read, so a swap after the read notes
// it again. One lookup per key.
func (c *Changes[V]) change(k FlowKey, d dirt) (Change[V], bool) {
	e := c.t.peek(&k)
	if d.state != nil && (e == nil || e.home() != (*Entry[V])(d.state).home()) {
		return Change[V]{}, false
	}
	if e == nil || e.Key() != k {
		// Gone, or k is now another flow's reply key: the flow whose
		// first key was k is gone.
		return Change[V]{Key: k, Cause: d.why}, true
	}
	e.home().clearNoted()
	return Change[V]{Key: k, Flow: e}, true
}

// Resync calls fn for every flow in the table, as Range walks it, after
// clearing its noted bit, and clears Lost. A consumer runs it when it
// attaches and whenever Lost says notes were dropped; notes queued
// meanwhile are reported by the next Drain as usual.
func (c *Changes[V]) Resync(fn func(Change[V])) int {
	c.lost.Store(false)
	n := 0
	for e := range c.t.All() {
		e.home().clearNoted()
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

// clearNoted clears e's noted bit, on the flow's current record.
func (e *Entry[V]) clearNoted() {
	for {
		w := e.state.Load()
		if w&moved != 0 {
			e = e.forward()
			continue
		}
		if w&noted == 0 || e.state.CompareAndSwap(w, w&^noted) {
			return
		}
	}
}
