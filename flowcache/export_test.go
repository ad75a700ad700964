package flowcache

import (
	"unsafe"

	"github.com/flowcache/flowcache/shard"
)

// ShardOf is the shard that stores k, for tests that hold its writer lock.
func (t *Table[V]) ShardOf(k FlowKey) *shard.Shard[Entry[V]] { return t.shardOf(t.hash(&k)) }

// RebuildAll rebuilds every shard's index at its current size with a
// fresh seed; records stay where they are.
func (t *Table[V]) RebuildAll() {
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		s.RebuildLocked(s.Slots())
		s.Unlock()
	}
}

// CompactAll rebuilds every shard's index and storage at its current
// size, moving every flow, as a pass does to a drained shard.
func (t *Table[V]) CompactAll() {
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		m := s.CompactLocked(s.Slots())
		t.folds(s, m)
		s.Unlock()
	}
}

// CoarseNow is the table's coarse clock in ms.
func (t *Table[V]) CoarseNow() int64 { return t.now.Load() }

// countLate is a Count whose check of the moved bit ran before a move
// froze the record and whose adds land after: what a worker stalled
// between the two does. Tests use it to force that interleaving.
func countLate[V any](e *Entry[V], n int) {
	e.packets.Add(1)
	e.bytes.Add(uint64(n))
}

// words views the key as five 64-bit words (it is 8-byte aligned and has
// no pointers).
func (k *FlowKey) words() *[5]uint64 { return (*[5]uint64)(unsafe.Pointer(k)) }
