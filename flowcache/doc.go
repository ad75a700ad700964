// Package flowcache is a concurrent flow table for multicore packet
// forwarders: userspace switches, routers, NATs, load balancers and
// firewalls written in Go. Every packet is classified by its 5-tuple and
// looked up from every core at once; lookups never take a lock, never
// allocate and never wait.
//
// # The data path
//
//	packet bytes ──ParseFlowKey──▶ FlowKey (40 B, no pointers)
//	                                   │ xxh3(key, table seed)
//	                                   ▼
//	                         64-bit hash ── top bits ──▶ shard[i]
//	                                   │                   │ atomic load of its bucket array
//	                                   ▼                   ▼
//	                    mix(hash, shard seed) ──▶ bucket: 4 tags │ 4 stamps │ 4 *Entry │ next
//	                                                         │ tag match (one word)
//	                                                         ▼
//	                                              *Entry[V]: key │ last-seen │ hits │ value
//
// One Table serves one port. It is split into a power-of-two number of
// shards (package shard), each an independent hash table with its own
// seed, writer mutex and bucket array published through an atomic pointer.
// Get hashes the key once, picks the shard from the hash's top bits,
// matches four 16-bit tags in one word and compares the key a word at a
// time: two dependent cache misses at most (bucket, entry) on a table
// larger than the cache. GetBatch overlaps those misses across a batch.
//
// # Concurrency
//
//   - Get and GetBatch only load (and, once per coarse-clock tick, store a
//     flow's last-seen time). No lock, allocation or time.Now().
//   - Insert, GetOrInsert (on a miss), Remove, Clear and Expire lock one
//     shard at a time. The limit is a table-wide count reserved before a
//     store, so Len never exceeds Limit, even with every core inserting.
//   - Entries are never rewritten: Insert of a present key publishes a new
//     Entry. The Value of an Entry is shared by every worker; mutate it
//     through atomics or a lock of your own.
//   - A flow that leaves the table (expired, removed, replaced, cleared)
//     is handed to the table's reclaim.Domain; its OnExpire runs once, after
//     every registered worker has passed a quiescent point (Reader.Quiescent
//     between packet batches), so no worker still forwards with it. Memory
//     safety is the garbage collector's: an Entry a worker holds stays valid.
//
// # Time
//
// The hot path reads time from one coarse word per table, in milliseconds,
// that Expire (and so the Reclaimer's tick) advances. A flow's LastSeen is
// exact to one pass; beside each slot's tag the bucket keeps a 1024 ms
// stamp, so that a pass streams the bucket array and touches an entry only
// when it may have expired (DESIGN.md invariant 11).
//
// # Memory
//
// A shard grows (rebuild at twice its live count) when an insert takes it
// past 3/4 full, and an expiry pass rebuilds a shard at max(2 × len, 64)
// slots when it is left under a quarter full, so memory comes back after a
// churn spike while a table near its limit never rebuilds back and forth.
// A rebuild publishes a new array with one store; lookups go on reading
// the old one until they finish.
//
// # Where it comes from
//
// OPTE's flow table (per-table seeds from the kernel's random source, a
// sorted dump, exact limits, shrink toward 2 × len after a drain), CLHT's
// cache-line buckets, rhashtable's reseed on long chains, and liburcu/DPDK
// QSBR for grace periods. See DESIGN.md for the invariants.
package flowcache
