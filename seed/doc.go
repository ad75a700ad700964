// Package seed is where flowcache's randomness comes from, and nothing else.
//
// A flow table's defence against hash flooding is that nobody outside the
// process can predict where a key lands: every table draws its seed from the
// kernel's random source (crypto/rand), and every shard rebuild draws a fresh
// shard seed (invariant 5 in docs/DESIGN.md). Tests and reproducible
// benchmarks need the opposite — the same seeds on every run — so a Source
// is either random (the default) or a deterministic SplitMix64 stream
// started from a seed the caller chose.
//
// Concurrency: Random is safe from any goroutine. A Source is safe for
// concurrent use; shards of one table share one and draw from it under
// their own writer locks, so its mutex is never on a lookup path.
package seed
