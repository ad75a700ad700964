package flowcache

import (
	"fmt"
	"iter"
	"slices"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/shard"
)

// Stats is a snapshot of a table's state and counters. Counters are read
// one at a time without stopping writers, so they are each exact but not a
// single instant's. Between operations, Live = Inserts − Removed −
// Replaced − Evicted − Expired − Cleared.
type Stats struct {
	Name           string
	Live           int   // flows stored now (a pair counts once)
	Limit          int   // most flows the table holds
	Shards         int   // shard count
	Slots          int   // slot capacity of all shards, overflow not counted
	Bytes          int64 // indexes, record storage and foreign tables the table holds
	Hits           uint64
	Misses         uint64
	Inserts        uint64 // flows stored (Insert, InsertPair, and the inserting GetOrInsert calls)
	Replaced       uint64 // flows that left because an insert stored another flow under one of their keys (cause Replaced)
	Removed        uint64 // flows removed by Remove (cause Removed)
	Evicted        uint64 // flows evicted at the limit to make room (cause Evicted)
	Expired        uint64 // flows removed by expiry passes (cause Expired)
	Cleared        uint64 // flows removed by Clear or Close (cause Cleared)
	FullRejections uint64 // inserts refused with ErrFull
	Pairs          int    // live flows stored under two keys (InsertPair), counted in Live
	Grows          uint64 // shard rebuilds to a larger size
	Shrinks        uint64 // shard rebuilds to a smaller size after a pass
	Floods         uint64 // shard rebuilds with a fresh seed because a chain passed its bound
	Compactions    uint64 // shard rebuilds that moved its entries densely (a drained shard, or its chunk directory)
	Evacuations    uint64 // chunks whose surviving entries moved to their shard's tail so the chunk could go
	Moved          uint64 // entries moved by compactions and evacuations
	Tidies         uint64 // index rebuilds at the same size that dropped the overflow buckets churn left linked
	Passes         uint64 // expiry passes run
	LastPass       time.Time
	LongestHold    time.Duration // longest a pass has held one shard's mutex
	Released       int64         // bytes released by passes and Clear, in all
	TTL            time.Duration // class 0's timeout
	// RecordsHeld is the room for records in the chunks the table holds
	// (a pair takes two records), RecordsLive how many of them hold a
	// live flow's key. RecordsHeld ≤ 2 × RecordsLive + 256 × Shards
	// whenever no write is in progress (invariant 16 in docs/DESIGN.md).
	RecordsHeld, RecordsLive int64
	// PendingBytes is the memory that waits for a grace period to come
	// back: chunks whose records moved, until their fold, and the records
	// of flows that left, until their OnRemove and release.
	PendingBytes int64
}

// Stats returns the table's counters. Hits is an unbiased estimate (see
// Entry.Hits); every other counter is exact.
func (t *Table[V]) Stats() Stats {
	t.mustInit()
	st := Stats{
		Name:        t.name,
		Live:        int(t.live.Load()),
		Limit:       int(t.limit),
		Shards:      len(t.shards),
		Hits:        uint64(t.hits.Value()),
		Misses:      uint64(t.misses.Value()),
		Expired:     t.expired.Load(),
		Cleared:     t.cleared.Load(),
		Passes:      t.passes.Load(),
		LastPass:    t.lastPass.Load(),
		LongestHold: time.Duration(t.longestHold.Load()),
		Released:    t.released.Load(),
		TTL:         t.timeouts[0].Load(),
	}
	var pairs uint64
	for i := range t.shards {
		s := &t.shards[i]
		st.Inserts += s.Tally(tallyInserts)
		st.Replaced += s.Tally(tallyReplaced)
		st.Removed += s.Tally(tallyRemoved)
		st.Evicted += s.Tally(tallyEvicted)
		st.FullRejections += s.Tally(tallyFull)
		pairs += s.Tally(tallyPairs)
		st.Slots += s.Slots()
		st.Bytes += s.Bytes()
		c := s.Counts()
		st.Grows += c.Grows
		st.Shrinks += c.Shrinks
		st.Floods += c.Floods
		st.Compactions += c.Compactions
		st.Evacuations += c.Evacuations
		st.Moved += c.Moved
		st.Tidies += c.Tidies
		held, live := s.Records()
		st.RecordsHeld += held
		st.RecordsLive += live
	}
	st.Pairs = int(int64(pairs))
	st.PendingBytes = t.pend.n.Load()
	st.Bytes += int64(len(t.shards)) * int64(unsafe.Sizeof(t.shards[0]))
	return st
}

// String formats the stats for a human, one line.
func (s Stats) String() string {
	return fmt.Sprintf("%s: live %d/%d (%d pairs), %d shards, %d slots, %d B held (records %d held, %d live; %d B pending); hits %d, misses %d, inserts %d; left: replaced %d, removed %d, evicted %d, expired %d, cleared %d; full %d; rebuilds grow %d shrink %d flood %d compact %d, evacuations %d (moved %d); passes %d, longest hold %v",
		s.Name, s.Live, s.Limit, s.Pairs, s.Shards, s.Slots, s.Bytes, s.RecordsHeld, s.RecordsLive, s.PendingBytes, s.Hits, s.Misses, s.Inserts,
		s.Replaced, s.Removed, s.Evicted, s.Expired, s.Cleared, s.FullRejections,
		s.Grows, s.Shrinks, s.Floods, s.Compactions, s.Evacuations, s.Moved, s.Passes, s.LongestHold)
}

// DumpRow is one flow in a Dump: a plain copy, safe to keep. A pair is one
// row, under its first key, with its reply key in Reply.
type DumpRow[V any] struct {
	Key      FlowKey
	Reply    FlowKey // the pair's second key; zero when Paired is false
	Paired   bool
	Class    int
	Value    V
	Hits     uint64
	LastSeen time.Time
	Packets  uint64
	Bytes    uint64
	State    uint32
}

// Dump returns a copy of every flow, sorted by FlowKey.Compare of the
// first key, so listings are stable across runs and rebuilds. It reads
// each shard as one consistent snapshot and does not refresh any flow.
func (t *Table[V]) Dump() []DumpRow[V] {
	rows := make([]DumpRow[V], 0, t.Len())
	for e := range t.All() {
		r := DumpRow[V]{Key: e.Key(), Class: e.Class(), Value: e.value, Hits: e.Hits(), LastSeen: e.LastSeen(),
			Packets: e.Packets(), Bytes: e.Bytes(), State: e.State()}
		r.Reply, r.Paired = e.Reply()
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b DumpRow[V]) int { return a.Key.Compare(b.Key) })
	return rows
}

// Range calls fn for every flow (a pair once) until fn returns false. Each
// shard is read as one consistent snapshot (taken under its writer lock,
// which no lookup takes), and fn runs with no lock held: a flow present
// for the whole walk is reported exactly once, and no flow twice. It does
// not refresh any flow's last-seen time or hits.
func (t *Table[V]) Range(fn func(*Entry[V]) bool) {
	t.mustInit()
	var buf []*Entry[V]
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		buf = s.FlowsLocked(buf[:0])
		s.Unlock()
		for _, e := range buf {
			if !fn(e) {
				return
			}
		}
	}
}

// All is Range for range-over-func: the same walk, with the same
// exactly-once guarantee for flows present throughout.
//
//	for e := range t.All() { ... }
func (t *Table[V]) All() iter.Seq[*Entry[V]] {
	return func(yield func(*Entry[V]) bool) { t.Range(yield) }
}

// Clear removes every flow; each one's OnRemove runs after a grace
// period, with cause Cleared. It locks every shard at once, in order, so a
// pair never loses one key without the other.
func (t *Table[V]) Clear() {
	t.mustInit()
	for i := range t.shards {
		t.shards[i].Lock()
	}
	var gs []gone[V]
	var buf []*Entry[V]
	var released int64
	for i := range t.shards {
		s := &t.shards[i]
		buf = s.FlowsLocked(buf[:0])
		for _, e := range buf {
			if t.feed.Load() != nil {
				k := e.Key()
				t.markLeft(e, t.hash(&k), Cleared)
			}
			gs = append(gs, gone[V]{e, Cleared})
			if e.node.Kind() == shard.Pair {
				s.TallyLocked(tallyPairs, minusOne)
			}
		}
		released += s.ResetLocked()
	}
	t.live.Add(-int64(len(gs)))
	for i := range t.shards {
		t.shards[i].Unlock()
	}
	t.released.Add(released)
	t.count(nil, Cleared, len(gs))
	t.retire(gs)
	t.reclaimIfPending()
}
