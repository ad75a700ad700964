package race_test

// The hash-flood tests take the attacker's view: the seed is known, so
// keys can be ground until they share one bucket. The flowcache Table has
// no switch to turn its defence off, so part (a) builds a bare shard
// (package shard, generic over a record that begins with shard.Node) with
// its chain bound turned off (SetMaxChainLocked(-1), a test hook) and a
// fixed seed.Source; that is the one place race_test reaches under
// flowcache/, together with the table's hashing (xxh3 of the 40 key bytes
// with Config.Seed) that part (b) reproduces from outside.

import (
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/flowcache/flowcache/seed"
	"github.com/flowcache/flowcache/shard"
	"github.com/zeebo/xxh3"
)

const (
	floodSeed  = 0xa77ac4e5 // the seed the attacker knows
	floodShard = 0x5eed5    // a fixed seed.Source start for bare shards
)

// keyBytes is the 40 bytes the table hashes: FlowKey is documented as 40
// bytes with zero padding and no pointers, hashed as it lies in memory.
func keyBytes(k *flowcache.FlowKey) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k))
}

func tableHash(k *flowcache.FlowKey, seed uint64) uint64 { return xxh3.HashSeed(keyBytes(k), seed) }

// shardKey is a FlowKey as the shard sees it (five words).
func shardKey(k *flowcache.FlowKey) *shard.Key { return (*shard.Key)(unsafe.Pointer(k)) }

// craft grinds keys (from index start on) until n of them land in bucket
// b of s for the table hash with seed, and accept(h) holds.
func craft(s *shard.Shard[node], seed uint64, b uint64, n int, accept func(h uint64) bool) []flowcache.FlowKey {
	keys := make([]flowcache.FlowKey, 0, n)
	for i := uint32(0); len(keys) < n; i++ {
		k := key(1<<31 | i)
		h := tableHash(&k, seed)
		if (accept == nil || accept(h)) && s.BucketOf(h) == b {
			keys = append(keys, k)
		}
	}
	return keys
}

// node is the bare shard's record: a key and nothing else.
type node struct{ shard.Node }

// moveNode is the bare shard's move function: the shard copies the key
// itself, and a node holds nothing more.
func moveNode(dst, src *node) {}

// newShard is a bare shard with a fixed seed source; maxChain < 0 turns
// the flood defence off, 0 keeps the default bound (shard.MaxChain).
func newShard(maxChain int) *shard.Shard[node] {
	s := new(shard.Shard[node])
	s.Init(shard.Config{
		Slots: 4096, // 1024 buckets: 2000 keys leave the load under 3/4, so no grow
		Hash: func(k *shard.Key) uint64 {
			return xxh3.HashSeed(unsafe.Slice((*byte)(unsafe.Pointer(k)), 40), floodSeed)
		},
		Seeds: seed.NewSource(floodShard),
	}, moveNode)
	if maxChain != 0 {
		s.Lock()
		s.SetMaxChainLocked(maxChain)
		s.Unlock()
	}
	return s
}

func insertAll(s *shard.Shard[node], keys []flowcache.FlowKey) {
	s.Lock()
	defer s.Unlock()
	for i := range keys {
		h := tableHash(&keys[i], floodSeed)
		if _, ok := s.FindLocked(h, shardKey(&keys[i])); ok {
			panic("insertAll: a key twice")
		}
		n, ref, _ := s.AllocLocked(false)
		n.SetKey(shardKey(&keys[i]))
		s.PlaceLocked(h, ref, 0, 0)
	}
}

// TestFloodChainGrowsWithoutDefence: (a) with the seed known and fixed and
// the defence off (chain bound -1), 2000 crafted keys pile into one bucket's
// chain; (b) the same keys into the same shard with the default bound
// make it reseed, and the chains stay short.
func TestFloodChainGrowsWithoutDefence(t *testing.T) {
	const n = 2000
	open := newShard(-1)
	keys := craft(open, floodSeed, 7, n, nil)
	insertAll(open, keys)
	open.Lock()
	chain := open.LongestChainLocked()
	open.Unlock()
	if want := n/4 - 1; chain < want || open.Counts().Floods != 0 {
		t.Errorf("no defence: longest chain %d overflow buckets (want >= %d), floods %d (want 0)", chain, want, open.Counts().Floods)
	}

	defended := newShard(0) // the same seeds: the same keys collide
	if got := craft(defended, floodSeed, 7, 1, nil)[0]; got != keys[0] {
		t.Fatalf("the two shards disagree on buckets for the same seed")
	}
	insertAll(defended, keys)
	defended.Lock()
	dchain := defended.LongestChainLocked()
	defended.Unlock()
	if defended.Counts().Floods == 0 || dchain > shard.MaxChain {
		t.Errorf("defence: floods %d (want > 0), longest chain %d (want <= %d)", defended.Counts().Floods, dchain, shard.MaxChain)
	}
	t.Logf("%d keys in one bucket: longest chain %d without the defence; %d with it after %d reseeding rebuilds", n, chain, dchain, defended.Counts().Floods)
}

// floodTable is a Table with Config.Seed fixed (the attacker knows it) and
// keys crafted to collide in one bucket of its shard 0. The attacker
// reproduces the table's placement from outside: the table hash is
// xxh3(key, Seed); the shard is its top bits; and shard i's first bucket
// array takes the (i+1)-th seed of seed.NewSource(Seed) and MinSlots slots,
// so a shadow shard built the same way has the same buckets.
func floodTable(tb testing.TB, n int) (*flowcache.Table[int], []flowcache.FlowKey) {
	const shards = 4
	t, err := flowcache.New(flowcache.Config[int]{
		Name:   "flooded",
		Limit:  1 << 20,
		Shards: shards,
		Seed:   floodSeed,
		Domain: reclaim.NewDomain(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	shadow := new(shard.Shard[node])
	shadow.Init(shard.Config{Slots: shard.MinSlots, Hash: func(*shard.Key) uint64 { return 0 }, Seeds: seed.NewSource(floodSeed)}, moveNode)
	keys := craft(shadow, floodSeed, 3, n, func(h uint64) bool { return h>>62 == 0 })
	return t, keys
}

// TestFloodTableReseeds: (b) in a real Table with a known fixed seed,
// crafted keys trigger a reseeding rebuild that Stats counts as a flood,
// and every crafted key is still found.
func TestFloodTableReseeds(t *testing.T) {
	tb, keys := floodTable(t, 2000)
	defer tb.Close()
	for i, k := range keys {
		if _, err := tb.Insert(k, i); err != nil {
			t.Fatal(err)
		}
	}
	st := tb.Stats()
	if st.Floods == 0 {
		t.Fatalf("crafted keys did not trigger a flood rebuild (is the attacker's derivation of the table's buckets still right?): %v", st)
	}
	for i, k := range keys {
		if e, ok := tb.Get(k); !ok || *e.Value() != i {
			t.Fatalf("crafted key %d lost after the flood rebuild", i)
		}
	}
	t.Logf("%d crafted keys: %v", len(keys), st)

	// Lookups of the crafted keys cost about what lookups of random keys
	// cost. Timing is noisy (more so under -race), so only a gross
	// difference fails; BenchmarkFloodedLookup measures it properly.
	if raceEnabled || testing.Short() {
		return
	}
	rnd, _ := randomTable(t, len(keys))
	defer rnd.Close()
	ratio := 1e9
	for range 3 {
		c := timeLookups(tb, keys)
		r := timeLookups(rnd, randomKeys(len(keys)))
		ratio = min(ratio, float64(c)/float64(r))
	}
	t.Logf("crafted/random lookup time: %.2f", ratio)
	if ratio > 5 {
		t.Errorf("lookups of crafted keys are %.1f× as slow as of random keys", ratio)
	}
}

func randomKeys(n int) []flowcache.FlowKey {
	keys := make([]flowcache.FlowKey, n)
	for i := range keys {
		keys[i] = key(uint32(i) * 2654435761)
	}
	return keys
}

func randomTable(tb testing.TB, n int) (*flowcache.Table[int], []flowcache.FlowKey) {
	t, err := flowcache.New(flowcache.Config[int]{Name: "random", Limit: 1 << 20, Shards: 4, Seed: floodSeed, Domain: reclaim.NewDomain()})
	if err != nil {
		tb.Fatal(err)
	}
	keys := randomKeys(n)
	for i, k := range keys {
		if _, err := t.Insert(k, i); err != nil {
			tb.Fatal(err)
		}
	}
	return t, keys
}

func timeLookups(t *flowcache.Table[int], keys []flowcache.FlowKey) time.Duration {
	start := time.Now()
	for range 200 {
		for _, k := range keys {
			t.Get(k)
		}
	}
	return time.Since(start)
}

// BenchmarkFloodedLookup: Get of keys crafted to collide for the table's
// known seed, against random keys (table=…), and lookups in a bare shard
// flooded with the defence off and on (shard=…): without the defence a
// lookup walks a chain of hundreds of buckets.
func BenchmarkFloodedLookup(b *testing.B) {
	const n = 2000
	crafted, ck := floodTable(b, n)
	for i, k := range ck {
		if _, err := crafted.Insert(k, i); err != nil {
			b.Fatal(err)
		}
	}
	random, rk := randomTable(b, n)
	for _, c := range []struct {
		name string
		t    *flowcache.Table[int]
		keys []flowcache.FlowKey
	}{{"table/keys=crafted", crafted, ck}, {"table/keys=random", random, rk}} {
		b.Run(c.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			hits := 0
			for b.Loop() {
				if _, ok := c.t.Get(c.keys[rng.IntN(len(c.keys))]); ok {
					hits++
				}
			}
			b.ReportMetric(float64(hits)/float64(b.N), "hit/op")
		})
	}
	for _, c := range []struct {
		name     string
		maxChain int
	}{{"shard/defence=off", -1}, {"shard/defence=on", 0}} {
		b.Run(c.name, func(b *testing.B) {
			s := newShard(c.maxChain)
			keys := craft(s, floodSeed, 7, n, nil)
			insertAll(s, keys)
			hs := make([]uint64, len(keys))
			for i := range keys {
				hs[i] = tableHash(&keys[i], floodSeed)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				i := rng.IntN(len(keys))
				if n, _, _ := s.Lookup(hs[i], shardKey(&keys[i])); n == nil {
					b.Fatal("miss")
				}
			}
		})
	}
}
