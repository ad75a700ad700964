// Package shard is one concurrent hash table: lookups that take no lock and
// only load, writes in place under one mutex, and growth, shrink and
// reseeding as one mechanism — rebuild a new array and publish it with one
// atomic store. It knows nothing of TTLs, ports or packets: it stores
// *Node (embedded first in the owner's entry) under a 40-byte Key, and
// keeps one opaque 32-bit stamp per slot for its owner.
//
// # Layout
//
// A shard's current generation is an array of 64-byte buckets, one cache
// line each. A bucket holds four slots; a full bucket links an overflow
// bucket.
//
//	0        8                 24                                 56      64
//	+--------+--------+--------+--------+--------+--------+--------+------+
//	| tags   | stamp0..stamp3  | slot0  | slot1  | slot2  | slot3  | next |
//	| 4×16b  | 4×32b           | *Node  | *Node  | *Node  | *Node  | *bkt |
//	+--------+-----------------+--------+--------+--------+--------+------+
//	 one word    owner's coarse    entry pointers (8 B each)        overflow
//	 matched     last-seen, read                                    link
//	 at once     by expiry passes
//
// The tag is the top 16 bits of the bucket hash (0 means free), so a lookup
// compares all four tags with one word operation (SWAR) and touches an
// entry only when its tag matches: a false match costs one extra entry load
// in 1/65536 lookups. The stamps sit beside the tags so that an owner's
// expiry pass can stream the bucket array and read every slot's age without
// dereferencing a single entry.
//
// The bucket hash is the owner's 64-bit key hash mixed with the
// generation's shard seed (a 64×64→128-bit multiply, folded). The owner
// chooses the shard from the top bits of the same hash.
//
// # Read/write ordering
//
// Lookups (Lookup) load the array pointer, the bucket's tag word, a slot
// pointer and the key; every shared word is read with sync/atomic, so the
// race detector and the Go memory model both see the writer's stores
// happen before the reader's loads. Writers hold the shard mutex and write
// in place, in an order that keeps every reader correct:
//
//   - Insert: store the stamp, then the slot (the node is complete before
//     it is published), then the tag. A reader that matches the tag finds
//     the node.
//   - Remove: clear the tag, then the slot. A reader that loaded the old
//     tag finds the node (the remove is concurrent: a hit is linearizable)
//     or nil, which it reads as a miss.
//   - Replace (a new node for a present key): one store to the slot. The
//     tag does not change, so a reader finds the old node or the new one,
//     never neither.
//   - Overflow: a new bucket is filled before the link to it is stored, and
//     a link is never removed from a published array.
//
// A live node never moves within a published array, so a key that stays
// present through a lookup is found by it.
//
// # Rebuild
//
// Rebuild makes a new array of the target size with a fresh seed from the
// shard's seed.Source, copies every live node (re-hashing its key with the
// owner's Hasher) and publishes the array with one atomic store. A reader
// that loaded the old array goes on reading it: after the store, no writer
// touches it again (the stamps aside, which are advisory), so it still
// answers as of the moment it was replaced, and the garbage collector frees
// it once the last reader has let go. Nothing waits: not lookups, and not
// the rebuild.
//
// Three things rebuild a shard: an insert that takes the load past 3/4
// (grow, to twice the live count), an insert whose chain has more than
// MaxChain overflow buckets at a lower load (reseed, same size: the
// hash-flooding defence, counted in Counts.Floods), and the owner's expiry
// pass (shrink). Growth at 3/4 and shrink only under 1/4 leave a gap that
// keeps a shard near a steady size from rebuilding back and forth.
//
// # Where this comes from
//
// The bucket — a cache line of keys' fingerprints and pointers with an
// overflow link, searched without locks and written under a per-bucket or
// per-table lock — is CLHT's (David, Guerraoui and Trigonakis, "Asynchronized
// Concurrency: The Secret to Scaling Concurrent Search Data Structures",
// ASPLOS 2015), which xsync's MapOf also follows. We differ in three ways:
// 16-bit tags instead of 8-bit (fewer false entry loads), per-slot stamps
// for the owner's expiry pass (OPTE's 1 s pass over every flow), and a
// per-shard seed that a rebuild replaces (rhashtable's rehash-on-long-chain
// defence, from Linux). Publishing a whole new array and letting readers
// finish on the old one is RCU's resize, with Go's collector in place of a
// grace period for the memory itself.
package shard
