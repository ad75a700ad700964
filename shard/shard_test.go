package shard

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/seed"
)

// hashOf is a stand-in for the owner's hash: any good 64-bit mix of the
// key works; the shard only needs it to be a function.
func hashOf(k *Key) uint64 {
	h := uint64(0x243f6a8885a308d3)
	for _, w := range k {
		h = mix(h^w, 0x13198a2e03707344)
	}
	return h
}

func keyOf(i uint64) Key { return Key{i, i * 7, ^i, 42, i >> 3} }

func nodeOf(i uint64) *Node { return &Node{key: keyOf(i)} }

func newTest(t testing.TB, slots int) *Shard {
	t.Helper()
	return New(Config{Slots: slots, Hash: hashOf, Seeds: seed.NewSource(1)})
}

func insert(s *Shard, n *Node) Rebuilt {
	s.Lock()
	defer s.Unlock()
	return s.InsertLocked(hashOf(&n.key), n, 0)
}

func lookup(s *Shard, i uint64) *Node {
	k := keyOf(i)
	n, _ := s.Lookup(hashOf(&k), &k)
	return n
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name      string
		tags, tag uint64
		want      uint64
	}{
		{"no lane", 0x0001_0002_0003_0004, 5, 0},
		{"lane 0", 0x0001_0002_0003_0004, 4, 0x8000},
		{"lane 3", 0x0001_0002_0003_0004, 1, 0x8000 << 48},
		{"two lanes", 0x0007_0002_0007_0004, 7, 0x8000<<48 | 0x8000<<16},
		{"high bit tag", 0x8000_ffff_0000_7fff, 0xffff, 0x8000 << 32},
		{"no borrow into next lane", 0x0001_0000_0001_0000, 1, 0x8000<<48 | 0x8000<<16},
		{"free lanes", 0x0000_ffff_0000_1234, 0, 0x8000<<48 | 0x8000<<16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := match(tt.tags, tt.tag); got != tt.want {
				t.Fatalf("match(%#x, %#x) = %#x, want %#x", tt.tags, tt.tag, got, tt.want)
			}
		})
	}
}

func TestMatchExhaustiveLanes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		tags, tag := r.Uint64(), r.Uint64()&0xffff
		if r.IntN(2) == 0 { // force some equal lanes
			tags = tags&^(0xffff<<16) | tag<<16
		}
		var want uint64
		for i := range 4 {
			if tags>>(16*i)&0xffff == tag {
				want |= 0x8000 << (16 * i)
			}
		}
		if got := match(tags, tag); got != want {
			t.Fatalf("match(%#x, %#x) = %#x, want %#x", tags, tag, got, want)
		}
	}
}

func TestInsertLookupRemoveReplace(t *testing.T) {
	s := newTest(t, 64)
	const n = 5000 // forces many grows from 64 slots
	for i := range uint64(n) {
		insert(s, nodeOf(i))
	}
	if s.Len() != n {
		t.Fatalf("Len = %d, want %d", s.Len(), n)
	}
	if c := s.Counts(); c.Grows == 0 {
		t.Fatal("5000 inserts from 64 slots did not grow")
	}
	for i := range uint64(n) {
		if got := lookup(s, i); got == nil || got.key != keyOf(i) {
			t.Fatalf("key %d: got %v", i, got)
		}
	}
	if lookup(s, n+1) != nil {
		t.Fatal("absent key found")
	}
	// Replace: readers then find the new node.
	k := keyOf(7)
	repl := &Node{key: k}
	s.Lock()
	old := s.ReplaceLocked(hashOf(&k), repl)
	s.Unlock()
	if old == nil || old == repl || lookup(s, 7) != repl {
		t.Fatal("replace did not publish the new node")
	}
	// Replace of an absent key changes nothing.
	absent := nodeOf(n + 5)
	s.Lock()
	if s.ReplaceLocked(hashOf(&absent.key), absent) != nil || s.Len() != n {
		t.Fatal("replace of an absent key changed the shard")
	}
	s.Unlock()
	for i := uint64(0); i < n; i += 2 {
		k := keyOf(i)
		s.Lock()
		if s.RemoveLocked(hashOf(&k), &k) == nil {
			t.Fatalf("remove %d: not found", i)
		}
		s.Unlock()
	}
	for i := range uint64(n) {
		if got := lookup(s, i) != nil; got != (i%2 == 1) {
			t.Fatalf("key %d present = %v after removing evens", i, got)
		}
	}
}

func TestRebuildKeepsEveryKeyAndChangesSeed(t *testing.T) {
	for _, slots := range []int{64, 1024, 1 << 14} {
		s := newTest(t, 64)
		for i := range uint64(3000) {
			insert(s, nodeOf(i))
		}
		s.Lock()
		seed0 := s.arr.Load().seed
		s.Rebuild(slots)
		if s.arr.Load().seed == seed0 {
			t.Fatal("rebuild kept the seed")
		}
		s.Unlock()
		for i := range uint64(3000) {
			if lookup(s, i) == nil {
				t.Fatalf("slots=%d: key %d lost in rebuild", slots, i)
			}
		}
		if s.Len() != 3000 {
			t.Fatalf("Len = %d", s.Len())
		}
	}
}

// A reader never waits for a writer: with the writer lock held and a
// rebuild done under it, lookups complete and answer right.
func TestLookupDoesNotWaitForWriterOrRebuild(t *testing.T) {
	s := newTest(t, 64)
	for i := range uint64(1000) {
		insert(s, nodeOf(i))
	}
	s.Lock()
	defer s.Unlock()
	s.Rebuild(1 << 12)
	done := make(chan bool)
	go func() {
		ok := true
		for i := range uint64(1000) {
			ok = ok && lookup(s, i) != nil
		}
		done <- ok && lookup(s, 5000) == nil
	}()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("lookup under a held lock gave a wrong answer")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lookup waited for the writer lock")
	}
}

// Keys present for the whole test are never missed by concurrent lookups
// while writers insert and remove other keys and rebuild the shard.
func TestConcurrentLookupsNeverMissStableKeys(t *testing.T) {
	s := newTest(t, 64)
	const stable = 2000
	for i := range uint64(stable) {
		insert(s, nodeOf(i))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var misses atomic.Int64
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for !stop.Load() {
				if lookup(s, rng.Uint64N(stable)) == nil {
					misses.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for it := 0; !stop.Load(); it++ {
			i := stable + rng.Uint64N(5000)
			k := keyOf(i)
			s.Lock()
			if s.FindLocked(hashOf(&k), &k) == nil {
				s.InsertLocked(hashOf(&k), nodeOf(i), 0)
			} else {
				s.RemoveLocked(hashOf(&k), &k)
			}
			if it%500 == 0 {
				s.Rebuild(64 << (it / 500 % 6))
			}
			s.Unlock()
		}
	})
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if m := misses.Load(); m != 0 {
		t.Fatalf("%d lookups missed keys present throughout", m)
	}
}

// collidingKeys builds keys that land in bucket 0 of s's current array:
// what an attacker who knows the seeds can do.
func collidingKeys(s *Shard, n int) []*Node {
	var out []*Node
	var k Key
	for i := uint64(0); len(out) < n; i++ {
		k = keyOf(i + 1<<40)
		if s.BucketOf(hashOf(&k)) == 0 {
			out = append(out, &Node{key: k})
		}
	}
	return out
}

func TestFloodWithoutDefenceGrowsChain(t *testing.T) {
	s := New(Config{Slots: 4096, Hash: hashOf, Seeds: seed.NewSource(1), MaxChain: -1})
	for _, n := range collidingKeys(s, 400) {
		insert(s, n)
	}
	s.Lock()
	defer s.Unlock()
	if c := s.LongestChain(); c < 90 {
		t.Fatalf("400 colliding keys made a chain of only %d buckets", c)
	}
	if s.Counts().Floods != 0 {
		t.Fatal("defence off but a flood rebuild ran")
	}
}

func TestFloodTriggersReseed(t *testing.T) {
	s := New(Config{Slots: 4096, Hash: hashOf, Seeds: seed.NewSource(1)})
	nodes := collidingKeys(s, 400)
	for _, n := range nodes {
		insert(s, n)
	}
	if s.Counts().Floods == 0 {
		t.Fatal("a flood of colliding keys did not reseed the shard")
	}
	s.Lock()
	c := s.LongestChain()
	s.Unlock()
	if c > DefaultMaxChain {
		t.Fatalf("after reseeding, longest chain is %d buckets, bound %d", c, DefaultMaxChain)
	}
	for _, n := range nodes {
		if got, _ := s.Lookup(hashOf(&n.key), &n.key); got != n {
			t.Fatal("a flooded key was lost")
		}
	}
}

func TestStaleStreamsStamps(t *testing.T) {
	s := newTest(t, 1024)
	for i := range uint64(100) {
		n := nodeOf(i)
		s.Lock()
		s.InsertLocked(hashOf(&n.key), n, uint32(i))
		s.Unlock()
	}
	s.Lock()
	defer s.Unlock()
	got, buckets := s.StaleStep(0, 1<<30, 50, nil)
	if buckets != s.Buckets() || len(got) != 50 {
		t.Fatalf("Stale below 50: %d slots, want 50", len(got))
	}
	for _, sl := range got {
		if sl.Stamp().Load() >= 50 {
			t.Fatalf("slot with stamp %d returned", sl.Stamp().Load())
		}
		s.RemoveSlot(sl)
	}
	if s.Len() != 50 {
		t.Fatalf("Len after removing stale = %d", s.Len())
	}
}

func TestClearLocked(t *testing.T) {
	s := newTest(t, 64)
	for i := range uint64(500) {
		insert(s, nodeOf(i))
	}
	s.Lock()
	nodes, released := s.ClearLocked(nil)
	s.Unlock()
	if len(nodes) != 500 || released <= 0 || s.Len() != 0 || s.Slots() != MinSlots {
		t.Fatalf("clear: %d nodes, %d bytes, len %d, slots %d", len(nodes), released, s.Len(), s.Slots())
	}
	if lookup(s, 3) != nil {
		t.Fatal("key found after clear")
	}
}

func BenchmarkLookup(b *testing.B) {
	s := newTest(b, 1<<16)
	for i := range uint64(40000) {
		insert(s, nodeOf(i))
	}
	keys := make([]Key, 4096)
	hs := make([]uint64, len(keys))
	for i := range keys {
		keys[i] = keyOf(uint64(i * 7))
		hs[i] = hashOf(&keys[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j := i & (len(keys) - 1)
		if n, _ := s.Lookup(hs[j], &keys[j]); n == nil {
			b.Fatal("miss")
		}
	}
}

func TestGenerationCountsArrays(t *testing.T) {
	s := newTest(t, 64)
	s.Lock()
	defer s.Unlock()
	g0 := s.Generation()
	s.Rebuild(64) // same size: the address could even come back, the count cannot
	g1 := s.Generation()
	s.ClearLocked(nil)
	if g2 := s.Generation(); g1 != g0+1 || g2 != g1+1 {
		t.Fatalf("generations %d, %d, %d; want consecutive", g0, g1, g2)
	}
}
