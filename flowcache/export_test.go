package flowcache

import "github.com/flowcache/flowcache/shard"

// ShardOf is the shard that stores k, for tests that hold its writer lock.
func (t *Table[V]) ShardOf(k FlowKey) *shard.Shard { return t.shardOf(t.hash(&k)) }

// RebuildAll rebuilds every shard at its current size with a fresh seed.
func (t *Table[V]) RebuildAll() {
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		s.Rebuild(s.Slots())
		s.Unlock()
	}
}

// CoarseNow is the table's coarse clock in ms.
func (t *Table[V]) CoarseNow() int64 { return t.now.Load() }
