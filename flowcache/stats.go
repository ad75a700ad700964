package flowcache

import (
	"fmt"
	"slices"
	"time"
	"unsafe"
)

// Stats is a snapshot of a table's state and counters. Counters are read
// one at a time without stopping writers, so they are each exact but not a
// single instant's.
type Stats struct {
	Name           string
	Live           int   // flows stored now
	Limit          int   // most flows the table holds
	Shards         int   // shard count
	Slots          int   // slot capacity of all shards, overflow not counted
	Bytes          int64 // bucket arrays and entries the table holds
	Hits           uint64
	Misses         uint64
	Inserts        uint64 // new flows stored
	Replaced       uint64 // inserts of a key already present
	Removed        uint64 // flows removed by Remove (cause Removed)
	Evicted        uint64 // flows evicted at the limit to make room (cause Evicted)
	Expired        uint64 // flows removed by expiry passes (cause Expired)
	Cleared        uint64 // flows removed by Clear or Close (cause Cleared)
	FullRejections uint64 // inserts refused with ErrFull
	Pairs          int    // live flows stored under two keys (InsertPair), counted in Live
	Grows          uint64 // shard rebuilds to a larger size
	Shrinks        uint64 // shard rebuilds to a smaller size after a pass
	Floods         uint64 // shard rebuilds with a fresh seed because a chain passed its bound
	Compactions    uint64 // storage rebuilds that moved a shard's entries densely
	Moved          uint64 // entries moved by compactions
	Passes         uint64 // expiry passes run
	LastPass       time.Time
	LongestHold    time.Duration // longest a pass has held one shard's mutex
	Released       int64         // bytes released by passes and Clear, in all
	TTL            time.Duration
}

// Stats returns the table's counters. Hits is an unbiased estimate (see
// Entry.Hits); every other counter is exact.
func (t *Table[V]) Stats() Stats {
	t.mustInit()
	st := Stats{
		Name:           t.name,
		Live:           int(t.live.Load()),
		Limit:          int(t.limit),
		Shards:         len(t.shards),
		Hits:           uint64(t.hits.Value()),
		Misses:         uint64(t.misses.Value()),
		Inserts:        uint64(t.inserts.Value()),
		Replaced:       uint64(t.replaced.Value()),
		Removed:        uint64(t.removed.Value()),
		FullRejections: uint64(t.full.Value()),
		Expired:        t.expired.Load(),
		Passes:         t.passes.Load(),
		LastPass:       t.lastPass.Load(),
		LongestHold:    time.Duration(t.longestHold.Load()),
		Released:       t.released.Load(),
		TTL:            t.ttl.Load(),
	}
	for i := range t.shards {
		s := &t.shards[i]
		st.Slots += s.Slots()
		st.Bytes += s.Bytes()
		c := s.Counts()
		st.Grows += c.Grows
		st.Shrinks += c.Shrinks
		st.Floods += c.Floods
	}
	st.Bytes += int64(st.Live)*int64(unsafe.Sizeof(Entry[V]{})) + int64(len(t.shards))*int64(unsafe.Sizeof(t.shards[0]))
	return st
}

// String formats the stats for a human, one line.
func (s Stats) String() string {
	return fmt.Sprintf("%s: live %d/%d, %d shards, %d slots, %d B held; hits %d, misses %d, inserts %d, replaced %d, removed %d, full %d, expired %d; rebuilds grow %d shrink %d flood %d; passes %d, longest hold %v",
		s.Name, s.Live, s.Limit, s.Shards, s.Slots, s.Bytes, s.Hits, s.Misses, s.Inserts, s.Replaced, s.Removed, s.FullRejections, s.Expired,
		s.Grows, s.Shrinks, s.Floods, s.Passes, s.LongestHold)
}

// DumpRow is one flow in a Dump: a plain copy, safe to keep.
type DumpRow[V any] struct {
	Key      FlowKey
	Value    V
	Hits     uint64
	LastSeen time.Time
}

// Dump returns a copy of every flow, sorted by FlowKey.Compare, so
// listings are stable across runs and rebuilds. It reads each shard as one
// consistent snapshot and does not refresh any flow. Values are copied
// with plain loads: a V that workers mutate with atomics should be read
// through Range and its own atomic loads instead.
func (t *Table[V]) Dump() []DumpRow[V] {
	rows := make([]DumpRow[V], 0, t.Len())
	t.Range(func(e *Entry[V]) bool {
		rows = append(rows, DumpRow[V]{Key: e.Key(), Value: e.value, Hits: e.Hits(), LastSeen: e.LastSeen()})
		return true
	})
	slices.SortFunc(rows, func(a, b DumpRow[V]) int { return a.Key.Compare(b.Key) })
	return rows
}
