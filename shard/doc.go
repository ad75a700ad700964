// Package shard is one concurrent hash table: lookups that take no lock
// and only load, writes in place under one mutex, and growth, shrink,
// reseeding and compaction as one mechanism — build a new array and
// publish it with one atomic store. It knows nothing of TTLs, ports or
// packets: it stores records of the owner's type E (which begins with a
// Node holding a 40-byte Key) in chunks of its own, indexes them by key,
// and keeps a 32-bit stamp and a class byte per key for the owner.
//
// # Layout
//
// A shard's current array is an index of 64-byte buckets (one cache line
// each) and the storage its refs point into. A bucket holds four keys'
// slots; a full bucket links an overflow bucket.
//
//	0        8                                  40       44       48              64
//	+--------+--------+--------+--------+--------+--------+--------+---------------+
//	| tags   | slot0  | slot1  | slot2  | slot3  | class  | next   |     (pad)     |
//	| 4×16b  | ref|stamp: 32+32 bits each        | 4×8b   | 32b    |               |
//	+--------+-----------------------------------+--------+--------+---------------+
//	 one word   which record holds the key, and    owner's  overflow
//	 matched    the owner's coarse last-seen,      class    link: an index into
//	 at once    read by expiry passes              per slot the array's overflow area
//
// The tag is the top 16 bits of the bucket hash with the lowest set (0
// means free, and the set bit keeps a tag from being 0 without a branch),
// so a lookup compares all four tags with one word operation (SWAR) and
// touches a record only when its tag matches: a false match costs one
// extra record load in 1/32768 lookups per occupied slot. The stamps and
// class bytes sit beside the tags so that an expiry pass streams the index
// and reads every key's age and timeout class without touching a record. A
// slot word packs the ref with the stamp so that a lookup refreshes the
// stamp with a compare-and-swap against the word it read: if another key
// took the slot meanwhile, the refresh fails instead of stamping the
// newcomer late.
//
// A ref is a 32-bit name for the record that holds a key:
//
//	local  ref: 0 0 index (30 bits)   the record at index in this array's storage
//	reply  ref: 0 1 index             a pair's reply record there; the flow is index−1
//	foreign ref: 1 x f                entry f of the shard's foreign table, which
//	                                  points at a reply record another shard stores
//
// Records live in chunks of up to 511, one heap object each; the
// storage's chunk directory maps index>>9 to a chunk. With a pointer-free
// record type a chunk holds no pointer but its header's, so the garbage
// collector marks one object per chunk and scans one word of it: a table
// with millions of flows costs a collection almost nothing. A chunk is a
// large object (over 32 KiB), so the allocator gives it pages of its own
// and takes them back whole when it is garbage: for a pointer-free record
// type, a raw block of the 5 to 8 pages that hold the most records per
// byte; for a record type with pointers, a typed chunk of 510 records.
//
//	chunk: | header (80 B, in 128): forwards, live bitmap, index, live count | rec 0 | … | rec n−1 |
//	record E: | Node: key (40 B), position, kind, Aux | the owner's fields … |
//
// # Read/write ordering
//
// Lookups (Lookup, and Locate with the Probe methods for batches) load the
// array pointer, a bucket's tag word, a slot word, the chunk directory
// entry and the record's key; every shared word is read with sync/atomic,
// so the race detector and the Go memory model both see the writer's
// stores happen before the reader's loads. Writers hold the shard mutex
// and write in place, in an order that keeps every reader correct:
//
//   - Insert: fill the record (it is fresh: no reader can reach it), then
//     store the slot word and class, then the tag. A reader that matches
//     the tag finds the ref, and the ref finds a complete record.
//   - Remove: clear the tag only. A reader that matched the old tag and
//     loads the slot word finds the old record: the remove is concurrent,
//     so a hit is linearizable.
//   - Replace (another record for a present key): one store of the slot
//     word. A reader finds the old record or the new one, never neither.
//   - Overflow: a new bucket is filled before the link to it is stored, and
//     a link is never removed from a published array.
//
// Records are never rewritten or reused: the storage only appends. A
// reader holding a stale ref therefore finds the record it meant, or one
// whose key does not match, or — once the record's chunk is dropped — no
// chunk at all, and then looks again from the current array. So a key that
// stays present through any writer's work is found by every lookup.
//
// # Rebuild, compaction, evacuation
//
// RebuildLocked makes a new index of the target size with a fresh seed
// from the shard's seed.Source, places every key in it (re-hashing it with
// the owner's Hasher) and publishes it with one atomic store. It shares the
// storage: records do not move. CompactLocked does the same and also
// copies every live record into a new, dense storage: how a drained shard
// gives its memory back however its surviving records lie. A reader that
// loaded the old array goes on reading it, old storage and all; after the
// store no writer touches it again (the stamps aside, which are advisory).
// Nothing waits: not lookups, and not the rebuild.
//
// A growth is not a rehash but a split (grow): the new index, twice the
// keys' slots, keeps the array's seed, and every key's new bucket is the
// low bits of its bucket hash that the larger mask takes, kept in the
// bytes that round its bucket up to a cache line (bucket.low). It reads
// the old index in order and writes the new one in order, and reads no
// record: a rehash missed in cache on every key's record, the most of
// what filling an empty table cost. A split undoes no flood (keys that
// share a bucket hash still do); a reseed does, and every rebuild that
// rehashes draws a fresh seed.
//
// Four things rebuild a shard: an insert that takes the load past 3/4
// (grow, to twice the keys, index only, a split), an insert whose chain
// has more than MaxChain overflow buckets at a lower load (reseed, same
// size: the hash-flooding defence, counted in Counts.Floods), and the
// owner's expiry pass, which compacts a shard left under a quarter full
// (shrink) or one whose chunk directory is mostly dropped chunks. Growth
// at 3/4 and shrink only under 1/4 leave a gap that keeps a shard near a
// steady size from rebuilding back and forth.
//
// Churn needs no rebuild. Only the chunk being filled gains records; every
// other chunk is dropped as soon as its last record dies, and queued for
// evacuation as soon as it is at the evacuation threshold (13/16 of its
// records) live or under, however it got there. Queued chunks are
// evacuated, sparsest first, while the chunks other than the one being
// filled hold more dead records than 1/8 of the live ones (the slack), so
// flows that die in the order they came empty their chunks whole and move
// nothing (SettleLocked, which writers call before they unlock;
// AllocLocked before it starts a new chunk; EvacuateLocked, one chunk per
// step of the owner's pass) — its survivors are copied to the chunk being
// filled and the slots naming them are pointed at the copies in place, one
// slot-word compare-and-swap each; then the chunk is dropped. So whenever
// no writer holds the mutex the storage holds at most 16/13 × its live
// records + one chunk (dead records outside the chunk being filled at most
// 1/8 of the live ones, or none queued and every other chunk over 13/16
// live), within 2 × + one chunk. Each evacuation moves at most that many
// records, tens of microseconds. And since a published overflow link is
// never removed, an insert that finds the index holding n/32 more overflow
// buckets than keys in overflow buckets (each was linked for one) rebuilds
// it at its size (a tidy), so chains do not creep up under churn at a
// steady size; a filling shard, whose chains lengthen with its load, never
// tidies.
//
// Moving a record the owner's workers may be writing to is a protocol
// between the shard and the owner: the shard records the forward (Forward)
// before it calls the owner's move function, which copies the record and
// freezes the old copy (see flowcache's Entry). The owner folds what still
// lands on old copies once a grace period has passed, from the Moved the
// shard returns.
//
// # Pairs
//
// A pair is one flow under two keys: two consecutive records in one
// storage (a Pair record holding the flow and its first key, then a Reply
// record holding the second key), so the flow is one record behind either
// key. The second key's slot holds a reply ref when it hashes to the same
// shard, and a foreign ref when it hashes to another: that shard's foreign
// table then points at the reply record. Foreign entries are real
// pointers, so a reader that loaded one keeps a valid record whatever
// happens next; the pair's own shard updates the entry when it moves the
// pair, under its own mutex.
//
// # Where this comes from
//
// The bucket — a cache line of keys' fingerprints and refs with an
// overflow link, searched without locks and written under a lock — is
// CLHT's (David, Guerraoui and Trigonakis, "Asynchronized Concurrency: The
// Secret to Scaling Concurrent Search Data Structures", ASPLOS 2015), which
// xsync's MapOf also follows. We differ in four ways: 16-bit tags instead
// of 8-bit (fewer false record loads), per-slot stamps and class bytes for
// the owner's expiry pass (OPTE's 1 s pass over every flow), a per-shard
// seed that a rebuild replaces (rhashtable's rehash-on-long-chain defence,
// from Linux), and records stored inline in chunks the shard compacts, as
// OPTE's map stores its entries and moves them when it shrinks, so memory
// follows the live flows. Publishing a whole new array and letting readers
// finish on the old one is RCU's resize, with Go's collector in place of a
// grace period for the memory itself.
package shard
