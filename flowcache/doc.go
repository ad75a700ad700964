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
//	                                   │                   │ atomic load of its array
//	                                   ▼                   ▼
//	                    mix(hash, shard seed) ──▶ bucket: 4 tags │ 4 ref+stamp │ 4 classes │ next
//	                                                         │ tag match (one word)
//	                                                         ▼
//	                       chunk directory[ref>>8] ──▶ Entry[V]: key │ kind │ hits │ last-seen │ value │ state │ packets │ bytes
//
// One Table serves one port. It is split into a power-of-two number of
// shards (package shard), each an independent hash table with its own
// seed, writer mutex, index and record storage, published through an
// atomic pointer. Get hashes the key once, picks the shard from the hash's
// top bits, matches four 16-bit tags in one word and compares the key a
// word at a time: two dependent cache misses at most (bucket, record) on a
// table larger than the cache. GetBatch overlaps those misses across a
// batch.
//
// # Concurrency
//
//   - Get and GetBatch only load (and, once per coarse-clock tick, store a
//     flow's last-seen time and its slot's stamp). No lock, allocation or
//     time.Now().
//   - Insert, InsertPair, GetOrInsert* (on a miss), Remove, RemoveEntry,
//     SetClass and SetValue lock the shards of the keys they touch, in
//     shard order; Clear locks them
//     all; Expire locks one shard (two for a pair) for one bounded step at
//     a time. The limit is a table-wide count reserved before a store, so
//     Len never exceeds Limit, even with every core inserting.
//   - A flow's keys are fixed when it is stored, and its value is never
//     rewritten in place: SetValue copies the flow, with its counters and
//     state, to a record holding the new value and points its keys at it
//     (Insert of a present key stores another flow in its place instead).
//     What changes per packet is the table's: Count (packets and bytes)
//     and the state word (CompareAndSwapState). Never write through Value.
//     RemoveEntry removes exactly the flow it is given.
//   - A flow that leaves the table (expired, removed, replaced, evicted,
//     cleared) is handed to the table's reclaim.Domain; OnRemove runs once,
//     with the cause, after every registered worker has passed a quiescent
//     point (Reader.Quiescent between packet batches), so no worker still
//     forwards with it.
//
// # Storage
//
// Flows live inline in their shard's storage, up to 511 to a chunk, not
// one heap object each: with a pointer-free V the collector marks a chunk
// per about 500 flows, and the table can give memory back however the surviving
// flows lie, because it can move them. A shard that a pass drains is
// rebuilt with its flows copied densely; a chunk that churn leaves under
// 13/16 live has its survivors moved to the shard's tail by the next
// writer, so a shard holds at most twice its live records and a chunk.
// What waits for a grace period (moved chunks, flows that left and their
// OnRemove) is bounded: past a quarter of the live records' bytes a writer
// asks the domain to reclaim at once (reclaim.Domain.TryReclaim) instead
// of waiting for the Reclaimer's tick. A flow that left releases what its
// value points to once its grace period is over. A registered
// worker's *Entry stays usable until its next Quiescent across a move:
// Value and Key read the flow as it was, and Count, State and
// CompareAndSwapState on the old copy act on the flow's new home (see
// Entry). Workers that are not registered may look flows up, but must not
// keep an *Entry past the lookup.
//
// # Connections
//
// InsertPair stores one flow under two keys — a connection's two
// directions, or a NAT's inside tuple and translated reply tuple — which
// expires, is evicted and is called back once. GetOrInsertPairBatch is
// the batch step for such flows: its make names each new flow's reply key,
// or refuses, and each key's Outcome says what happened. Timeout classes
// (Config.Timeouts, SetClass, SetTimeout) give each flow the timeout of
// its state, as conntrack's per-state timeouts do, and the pass reads each
// flow's class from the bucket it streams. Config.Evict lets an insert at
// the limit push out the longest-idle flow it approves (conntrack's early
// drop of unanswered connections). OnRemove says why each flow left.
//
// # Time
//
// The hot path reads time from one coarse word per table, in
// milliseconds, that Expire (and so the Reclaimer's tick) advances. A
// flow's LastSeen is exact to one pass; beside each slot's tag the bucket
// keeps a 1024 ms stamp, so that a pass streams the index and touches a
// flow only when it may have expired (invariant 11 in docs/DESIGN.md).
// With a timeout at or below the pass period, a flow hit continuously
// still expires at the next pass: its last-seen time moves with the pass.
//
// # Memory
//
// A shard grows (its index rebuilt at twice its keys) when an insert takes
// it past 3/4 full, and an expiry pass rebuilds a shard at max(2 × keys,
// 64) slots, its storage dense, when it is left under a quarter full, so
// memory comes back after a churn spike while a table near its limit never
// resizes back and forth. A rebuild publishes a new array with one store;
// lookups go on reading the old one until they finish.
//
// # Where it comes from
//
// OPTE's flow table (per-table seeds from the kernel's random source, a
// sorted dump, exact limits, shrink toward 2 × len after a drain, entries
// stored inline), CLHT's cache-line buckets, rhashtable's reseed on long
// chains, conntrack's pairs, per-state timeouts and early drop, and
// liburcu/DPDK QSBR for grace periods. docs/DESIGN.md in the repository
// gives the design, the invariants and the tests that hold them.
package flowcache
