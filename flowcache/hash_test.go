package flowcache

import (
	"math/rand/v2"
	"testing"

	"github.com/zeebo/xxh3"
)

// TestHash40MatchesXXH3: the table's 40-byte hash is xxh3.HashSeed of the
// key's bytes, for random keys (random words, and keys as NewFlowKey and
// the parsers build them) and random seeds, seed 0 and the seeds next to
// the edges of the 64-bit range included.
func TestHash40MatchesXXH3(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seeds := []uint64{0, 1, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for range 100 {
		seeds = append(seeds, rng.Uint64())
	}
	var keys []FlowKey
	for range 1000 {
		keys = append(keys, FlowKey{rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64()})
	}
	for i := range 1000 {
		keys = append(keys, testKey(i), testKey(i).Reverse())
	}
	keys = append(keys, FlowKey{}, FlowKey{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)})
	for _, seed := range seeds {
		keysOf := keysFor(seed)
		var tb *Table[int]
		if seed != 0 { // Config.Seed 0 asks for a random seed
			tb = newTable(t, Config[int]{Limit: 1, Seed: seed})
		}
		for i := range keys {
			k := &keys[i]
			want := xxh3.HashSeed(k.bytes(), seed)
			if got := keysOf.sum(le64(k.w0), le64(k.w1), le64(k.w2), le64(k.w3), le64(k.w4)); got != want {
				t.Fatalf("key % x, seed %#x: sum %#x, xxh3.HashSeed %#x", k.bytes(), seed, got, want)
			}
			if tb == nil {
				continue
			}
			// The table's forms: by pointer, in registers, as the shard's Key.
			if h, hw, hk := tb.hash(k), tb.hashWords(*k), tb.hashKey(skey(k)); h != want || hw != want || hk != want {
				t.Fatalf("key % x, seed %#x: hash %#x, hashWords %#x, hashKey %#x; xxh3.HashSeed %#x", k.bytes(), seed, h, hw, hk, want)
			}
		}
	}
}
