package shard

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/seed"
)

// rec is a record as an owner would define one: a Node first, then the
// owner's fields.
type rec struct {
	Node
	val uint64
}

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

func moveRec(dst, src *rec) { dst.val = src.val }

func newTest(t testing.TB, slots int) *Shard[rec] {
	t.Helper()
	s := new(Shard[rec])
	s.Init(Config{Slots: slots, Hash: hashOf, Seeds: seed.NewSource(1)}, moveRec)
	return s
}

// put stores key i with value i as a one-key record.
func put(s *Shard[rec], i uint64) *rec {
	s.Lock()
	defer s.Unlock()
	e, ref, _ := s.AllocLocked(false)
	e.key = keyOf(i)
	e.val = i
	s.PlaceLocked(hashOf(&e.key), ref, uint32(i), 0)
	return e
}

func lookup(s *Shard[rec], i uint64) *rec {
	k := keyOf(i)
	e, _, _ := s.Lookup(hashOf(&k), &k)
	return e
}

// del removes key i's one-key record.
func del(s *Shard[rec], i uint64) bool {
	k := keyOf(i)
	s.Lock()
	defer s.Unlock()
	p, ok := s.FindLocked(hashOf(&k), &k)
	if !ok {
		return false
	}
	e := FlowAt[rec](p)
	s.ClearLocked(p)
	s.KillLocked(e)
	return true
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

// What a lookup reads lies on cache lines that writers do not write: the
// shard's array pointer and record geometry alone in its first pair of
// lines, before the mutex and the counts; the storage's chunk directory
// more than a line away from its writer state (which every insert and
// removal writes); the array's words more than a line away from its
// overflow count (which every insert that links an overflow bucket
// writes). A word a lookup reads on a line another core writes costs the
// lookup a miss each time the writer has been there.
func TestLookupWordsApart(t *testing.T) {
	var c core
	if end := unsafe.Offsetof(c.size) + unsafe.Sizeof(c.size); end > readLines || unsafe.Offsetof(c.mu) < readLines {
		t.Errorf("shard: lookup words end at %d, the mutex starts at %d", end, unsafe.Offsetof(c.mu))
	}
	var st storage
	if end, w := unsafe.Offsetof(st.layout)+unsafe.Sizeof(st.layout), unsafe.Offsetof(st.used); w < end+64 {
		t.Errorf("storage: lookup words end at %d, writer state starts at %d", end, w)
	}
	var a array
	if end, w := unsafe.Offsetof(a.overflow)+unsafe.Offsetof(a.overflow.dir)+8, unsafe.Offsetof(a.overflow)+unsafe.Offsetof(a.overflow.n); w < end+64 {
		t.Errorf("array: lookup words end at %d, the overflow count is at %d", end, w)
	}
	for _, f := range []uintptr{unsafe.Offsetof(a.seed), unsafe.Offsetof(a.mask), unsafe.Offsetof(a.buckets), unsafe.Offsetof(a.store), unsafe.Offsetof(a.s)} {
		if f >= unsafe.Offsetof(a.overflow) {
			t.Errorf("array: a lookup word at %d, past the overflow area's directory", f)
		}
	}
}

// The layout claims, checked: a bucket is one cache line (also checked at
// compile time), a shard is whole pairs of cache lines, and a chunk is a
// large object (over 32 KiB, so the allocator gives it pages of its own):
// for a pointer-free record a raw block of whole pages holding as many
// records as fit, for a record with pointers a typed chunk of 511 records
// with the header in the room of a 512th.
func TestLayout(t *testing.T) {
	if n := unsafe.Sizeof(bucket{}); n != 64 {
		t.Errorf("bucket is %d bytes", n)
	}
	if n := unsafe.Sizeof(Shard[rec]{}); n%128 != 0 {
		t.Errorf("Shard is %d bytes, not whole pairs of cache lines", n)
	}
	if n := unsafe.Sizeof(Node{}); n != 48 {
		t.Errorf("Node is %d bytes", n)
	}
	if n := unsafe.Sizeof(chunkHeader{}); n != 80 {
		t.Errorf("chunk header is %d bytes", n)
	}
	type rec80 struct {
		Node
		_ [4]uint64
	}
	type rec96 struct {
		Node
		_ [6]uint64
	}
	type rec104 struct {
		Node
		_ [7]uint64
	}
	type withPtr struct {
		Node
		_ *int
		_ [5]uint64
	}
	for _, tc := range []struct {
		name  string
		l     *layout
		per   uint32
		pages int64
	}{
		{"80 B", layoutOf[rec80](), 510, 5},
		{"96 B", layoutOf[rec96](), 510, 6},
		{"104 B", layoutOf[rec104](), 471, 6},
		{"pointers, 96 B", layoutOf[withPtr](), 510, 6},
	} {
		l := tc.l
		if l.per != tc.per || l.sparse != l.per*13/16 {
			t.Errorf("%s: %d records per chunk (threshold %d), want %d", tc.name, l.per, l.sparse, tc.per)
		}
		if l.chunk <= 32<<10 || l.chunk > tc.pages*pageBytes || l.chunk <= (tc.pages-1)*pageBytes {
			t.Errorf("%s: a chunk is %d bytes, want %d pages", tc.name, l.chunk, tc.pages)
		}
		if l.recs != rawHeader || rawHeader+uintptr(l.per)*l.size > uintptr(l.chunk) {
			t.Errorf("%s: records from %d: %d of %d bytes do not fit the chunk's %d", tc.name, l.recs, l.per, l.size, l.chunk)
		}
		if c := l.newChunk(); uintptr(unsafe.Pointer(c))%64 != 0 {
			t.Errorf("%s: a chunk's header (and so its records) is not on a cache line", tc.name)
		}
	}
}

func TestInsertLookupRemoveReplace(t *testing.T) {
	s := newTest(t, 64)
	const n = 5000 // forces many grows from 64 slots
	for i := range uint64(n) {
		put(s, i)
	}
	if s.Len() != n {
		t.Fatalf("Len = %d, want %d", s.Len(), n)
	}
	if c := s.Counts(); c.Grows == 0 {
		t.Fatal("5000 inserts from 64 slots did not grow")
	}
	for i := range uint64(n) {
		if got := lookup(s, i); got == nil || got.key != keyOf(i) || got.val != i {
			t.Fatalf("key %d: got %v", i, got)
		}
	}
	if lookup(s, n+1) != nil {
		t.Fatal("absent key found")
	}
	// Replace: readers then find the new record.
	k := keyOf(7)
	s.Lock()
	p, _ := s.FindLocked(hashOf(&k), &k)
	old := FlowAt[rec](p)
	e, ref, _ := s.AllocLocked(false)
	e.key, e.val = k, 700
	s.ReplaceLocked(p, ref, 0, 0)
	s.KillLocked(old)
	s.Unlock()
	if got := lookup(s, 7); got != e || old.val != 7 {
		t.Fatal("replace did not publish the new record, or rewrote the old one")
	}
	for i := uint64(0); i < n; i += 2 {
		if !del(s, i) {
			t.Fatalf("remove %d: not found", i)
		}
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
			put(s, i)
		}
		s.Lock()
		seed0 := s.arr.Load().seed
		s.RebuildLocked(slots)
		if s.arr.Load().seed == seed0 {
			t.Fatal("rebuild kept the seed")
		}
		s.Unlock()
		for i := range uint64(3000) {
			if e := lookup(s, i); e == nil || e.val != i {
				t.Fatalf("slots=%d: key %d lost in rebuild", slots, i)
			}
		}
		if s.Len() != 3000 {
			t.Fatalf("Len = %d", s.Len())
		}
	}
}

// Pairs: the reply key of a pair finds the pair's first record, whether
// the reply key hashes to the pair's own shard (a local reply ref) or to
// another one (a foreign ref through that shard's foreign table).
func TestPairLocalAndForeign(t *testing.T) {
	a, b := newTest(t, 64), newTest(t, 64)
	k1, r1, r2 := keyOf(1), keyOf(2), keyOf(3)
	a.Lock()
	b.Lock()
	// A pair with both keys in a.
	e, ref, _ := a.AllocLocked(true)
	e.key, e.val = k1, 11
	Next(e).key = r1
	a.PlaceLocked(hashOf(&k1), ref, 0, 0)
	a.PlaceLocked(hashOf(&r1), ReplyRef(ref), 0, ReplyClass)
	// A pair whose reply key lives in b.
	f, fref, _ := a.AllocLocked(true)
	k4 := keyOf(4)
	f.key, f.val = k4, 44
	Next(f).key = r2
	a.PlaceLocked(hashOf(&k4), fref, 0, 0)
	b.PlaceLocked(hashOf(&r2), b.ForeignAllocLocked(Next(f)), 0, ReplyClass)
	b.Unlock()
	a.Unlock()
	if f.Kind() != Pair || Next(f).Kind() != Reply || Prev(Next(f)) != f {
		t.Fatal("pair records are not consecutive")
	}
	for _, tc := range []struct {
		s    *Shard[rec]
		k    Key
		want *rec
	}{{a, k1, e}, {a, r1, e}, {a, k4, f}, {b, r2, f}} {
		if got, _, _ := tc.s.Lookup(hashOf(&tc.k), &tc.k); got != tc.want {
			t.Fatalf("lookup %v: %p, want %p", tc.k, got, tc.want)
		}
	}
	// The pass never sees a reply key, and the snapshot lists each flow once.
	a.Lock()
	defer a.Unlock()
	cuts := [Classes]uint32{^uint32(0)}
	if st, _ := a.StaleStepLocked(0, 1<<30, &cuts, nil); len(st) != 2 {
		t.Fatalf("stale step saw %d slots, want the 2 first keys", len(st))
	}
	if flows := a.FlowsLocked(nil); len(flows) != 2 {
		t.Fatalf("FlowsLocked: %d flows", len(flows))
	}
}

// Compaction copies every live record to a dense storage, leaves a forward
// from each old copy, and releases the memory of the dead ones.
func TestCompactMovesLiveRecords(t *testing.T) {
	s := newTest(t, 64)
	n := 10 * s.ChunkRecords()
	old := make([]*rec, n)
	for i := range uint64(n) {
		old[i] = put(s, i)
	}
	for i := range uint64(n) {
		if i%100 != 0 {
			del(s, i)
		}
	}
	s.Lock()
	before := s.Bytes()
	m := s.CompactLocked(MinSlots)
	after := s.Bytes()
	s.Unlock()
	moved := 0
	s.Lock()
	EachMoved(m, func(o *rec) {
		moved++
		if f := Forward(o); f == nil || f.key != o.key || f.val != o.val {
			t.Fatalf("old copy %v: forward %v", o.key, f)
		}
	})
	s.Unlock()
	if want := (n + 99) / 100; moved != want {
		t.Fatalf("%d records moved, want %d", moved, want)
	}
	for i := uint64(0); i < uint64(n); i += 100 {
		e := lookup(s, i)
		if e == nil || e == old[i] || e.val != i || Forward(old[i]) != e {
			t.Fatalf("key %d after compaction: %p (old %p)", i, e, old[i])
		}
	}
	if c := s.Counts(); c.Compactions != 1 || c.Moved != uint64(moved) || after*10 > before {
		t.Fatalf("bytes %d -> %d; counts %+v, %d moved", before, after, c, moved)
	}
}

// Evacuation: a chunk that falls to half live moves its survivors to the
// tail in place, and one that empties is dropped; a lookup through an old
// array that still names a dropped chunk finds the key again in the
// current array.
func TestEvacuateSparseChunks(t *testing.T) {
	s := newTest(t, 64)
	per := uint64(s.ChunkRecords())
	n := 8 * per // key i in chunk i/per
	for i := range n {
		put(s, i)
	}
	s.Lock()
	stale := s.arr.Load() // what a slow reader still holds
	s.RebuildLocked(s.Slots())
	_, chunks0, _ := s.StorageLocked()
	s.Unlock()
	// Chunk 0 empties; chunks 1..6 fall to a quarter live.
	survivors := 0
	for i := range n - per {
		if i < per || i%4 != 0 {
			del(s, i)
		} else {
			survivors++
		}
	}
	s.Lock()
	// Chunk 0 was queued at the threshold, and taken off the queue when
	// it emptied and was dropped; chunks 1..6 wait, their dead records
	// far more than the slack.
	if sp := s.SparseLocked(); sp != 6 {
		t.Fatalf("%d chunks queued for evacuation, want 6", sp)
	}
	var m Moved
	for s.SparseLocked() > 0 {
		m.add(s.EvacuateLocked(1))
	}
	if c := s.Counts(); len(m.chunks) != 6 || c.Evacuations != 6 || c.Compactions != 0 {
		t.Fatalf("%d chunks evacuated, counts %+v; want 6 evacuations", len(m.chunks), c)
	}
	live, chunks, _ := s.StorageLocked()
	s.Unlock()
	if want := survivors + int(per); live != want || chunks >= chunks0-4 {
		t.Fatalf("after evacuation: %d live records in %d chunks (from %d); want %d live", live, chunks, chunks0, want)
	}
	s.Lock()
	moved := 0
	EachMoved(m, func(*rec) { moved++ })
	s.Unlock()
	if moved != survivors {
		t.Fatalf("%d moved, want %d", moved, survivors)
	}
	for i := range uint64(n) {
		present := i >= n-per || i >= per && i%4 == 0
		if e := lookup(s, i); (e != nil) != present || present && e.val != i {
			t.Fatalf("key %d: %v, present %v", i, e, present)
		}
	}
	// The old array names the moved records by their old refs, some in
	// dropped chunks, which resolve to nil: a lookup that meets one looks
	// again in the current array (lookup's retry), where the key is found.
	dropped := 0
	stale.each(func(b *bucket, i int, w uint64) {
		if s.keyRec(stale, refOf(w)) == nil {
			dropped++
		}
	})
	if dropped == 0 {
		t.Fatal("no stale ref into a dropped chunk: the retry is not exercised")
	}
}

// Keys present for the whole test are never missed by concurrent lookups
// while writers insert and remove other keys, rebuild, compact and
// evacuate the shard.
func TestConcurrentLookupsNeverMissStableKeys(t *testing.T) {
	s := newTest(t, 64)
	const stable = 2000
	for i := range uint64(stable) {
		put(s, i)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var misses atomic.Int64
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for !stop.Load() {
				i := rng.Uint64N(stable)
				if e := lookup(s, i); e == nil || e.val != i {
					misses.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for it := 0; !stop.Load(); it++ {
			i := stable + rng.Uint64N(5000)
			if !del(s, i) {
				put(s, i)
			}
			s.Lock()
			switch it % 500 {
			case 0:
				s.RebuildLocked(64 << (it / 500 % 6))
			case 250:
				s.CompactLocked(s.Slots())
			default:
				s.EvacuateLocked(1)
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
func collidingKeys(s *Shard[rec], n int) []uint64 {
	var out []uint64
	for i := uint64(1 << 40); len(out) < n; i++ {
		k := keyOf(i)
		if s.BucketOf(hashOf(&k)) == 0 {
			out = append(out, i)
		}
	}
	return out
}

func TestFloodWithoutDefenceGrowsChain(t *testing.T) {
	s := newTest(t, 4096)
	s.Lock()
	s.SetMaxChainLocked(-1)
	s.Unlock()
	for _, i := range collidingKeys(s, 400) {
		put(s, i)
	}
	s.Lock()
	defer s.Unlock()
	if c := s.LongestChainLocked(); c < 90 {
		t.Fatalf("400 colliding keys made a chain of only %d buckets", c)
	}
	if s.Counts().Floods != 0 {
		t.Fatal("defence off but a flood rebuild ran")
	}
}

func TestFloodTriggersReseed(t *testing.T) {
	s := newTest(t, 4096)
	keys := collidingKeys(s, 400)
	for _, i := range keys {
		put(s, i)
	}
	if s.Counts().Floods == 0 {
		t.Fatal("a flood of colliding keys did not reseed the shard")
	}
	s.Lock()
	c := s.LongestChainLocked()
	s.Unlock()
	if c > MaxChain {
		t.Fatalf("after reseeding, longest chain is %d buckets, bound %d", c, MaxChain)
	}
	for _, i := range keys {
		if lookup(s, i) == nil {
			t.Fatal("a flooded key was lost")
		}
	}
}

// The pass's scan streams stamps and class bytes: it returns exactly the
// first keys whose stamp is under their class's cut.
func TestStaleStepByClass(t *testing.T) {
	s := newTest(t, 1024)
	for i := range uint64(100) {
		s.Lock()
		e, ref, _ := s.AllocLocked(false)
		e.key = keyOf(i)
		s.PlaceLocked(hashOf(&e.key), ref, uint32(i), uint8(i%3))
		s.Unlock()
	}
	s.Lock()
	defer s.Unlock()
	cuts := [Classes]uint32{50, 10, 0} // class 2: nothing can have expired
	got, buckets := s.StaleStepLocked(0, 1<<30, &cuts, nil)
	if buckets != s.Buckets() {
		t.Fatal("bucket count")
	}
	want := 0
	for i := range 100 {
		if c := cuts[i%3]; uint32(i) < c {
			want++
		}
	}
	if len(got) != want {
		t.Fatalf("stale step: %d slots, want %d", len(got), want)
	}
	for _, p := range got {
		if p.Stamp() >= cuts[p.Class()] {
			t.Fatalf("slot with stamp %d class %d returned", p.Stamp(), p.Class())
		}
	}
}

// The eviction scan looks at no more than it is allowed to.
func TestNearIsBounded(t *testing.T) {
	s := newTest(t, 4096)
	for i := range uint64(2000) {
		put(s, i)
	}
	s.Lock()
	defer s.Unlock()
	for i := range uint64(100) {
		k := keyOf(i)
		if got := s.NearLocked(hashOf(&k), 64, nil); len(got) == 0 || len(got) > 64 {
			t.Fatalf("NearLocked returned %d slots", len(got))
		}
	}
}

func TestResetLocked(t *testing.T) {
	s := newTest(t, 64)
	for i := range uint64(500) {
		put(s, i)
	}
	s.Lock()
	flows := s.FlowsLocked(nil)
	released := s.ResetLocked()
	s.Unlock()
	if len(flows) != 500 || released <= 0 || s.Len() != 0 || s.Slots() != MinSlots {
		t.Fatalf("reset: %d flows, %d bytes, len %d, slots %d", len(flows), released, s.Len(), s.Slots())
	}
	if lookup(s, 3) != nil {
		t.Fatal("key found after reset")
	}
}

func TestGenerationCountsArrays(t *testing.T) {
	s := newTest(t, 64)
	s.Lock()
	defer s.Unlock()
	g0 := s.Generation()
	s.RebuildLocked(64) // same size: the address could even come back, the count cannot
	g1 := s.Generation()
	s.ResetLocked()
	if g2 := s.Generation(); g1 != g0+1 || g2 != g1+1 {
		t.Fatalf("generations %d, %d, %d; want consecutive", g0, g1, g2)
	}
}

func BenchmarkLookup(b *testing.B) {
	s := newTest(b, 1<<16)
	for i := range uint64(40000) {
		put(s, i)
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
		if e, _, _ := s.Lookup(hs[j], &keys[j]); e == nil {
			b.Fatal("miss")
		}
	}
}

// Regression (issue 16): a chunk whose records all died while it was the
// one being filled is dropped as soon as the next chunk starts, not kept
// for good. Flows that end at once (insert, then remove) used to keep
// every chunk they ever filled.
func TestChunkEmptiedWhileFillingIsDropped(t *testing.T) {
	s := newTest(t, 64)
	for i := range uint64(5 * s.ChunkRecords()) {
		put(s, i)
		del(s, i)
	}
	s.Lock()
	live, chunks, _ := s.StorageLocked()
	s.Unlock()
	if live != 0 || chunks > 1 {
		t.Fatalf("%d live records in %d chunks after every record died: want at most the one being filled", live, chunks)
	}
}

// delSettle removes key i's record as a flowcache write does: settling
// the storage before it lets go of the mutex.
func delSettle(s *Shard[rec], i uint64) {
	k := keyOf(i)
	s.Lock()
	defer s.Unlock()
	if p, ok := s.FindLocked(hashOf(&k), &k); ok {
		e := FlowAt[rec](p)
		s.ClearLocked(p)
		s.KillLocked(e)
	}
	s.SettleLocked()
}

// Flows that die in the order they came, a window sliding forward (the
// common shape of churn), empty their chunks whole, oldest first: nothing
// is evacuated, and the storage holds the window and the chunks it
// straddles. Evacuating each chunk as it reached the threshold moved 13
// of every 16 records once (BenchmarkMixed: 12 % of its time). A window
// of 24 chunks allows 3 chunks of dead records (the slack, 1/8 of the
// live ones), and the one chunk draining at a time holds less; a shard
// whose window is under 8 chunks evacuates its oldest chunk once more
// than the slack of it is dead, moving what is left of it.
func TestSlidingWindowMovesNothing(t *testing.T) {
	s := newTest(t, 64)
	per := uint64(s.ChunkRecords())
	window := 24 * per
	for i := range window {
		put(s, i)
	}
	for i := range 20 * per {
		delSettle(s, i)
		put(s, window+i)
		if i%per == per/2 {
			s.Lock()
			live, chunks, _ := s.StorageLocked()
			s.Unlock()
			if uint64(live) != window || uint64(chunks) > window/per+1 {
				t.Fatalf("step %d: %d live records in %d chunks, want %d in at most %d", i, live, chunks, window, window/per+1)
			}
		}
	}
	if c := s.Counts(); c.Evacuations != 0 || c.Moved != 0 {
		t.Fatalf("counts %+v: the sliding window moved records", c)
	}
	for i := 20 * per; i < 20*per+window; i++ {
		if e := lookup(s, i); e == nil || e.val != i {
			t.Fatalf("key %d lost", i)
		}
	}
}

// Evacuation is due only past the slack (dead records held outside the
// chunk being filled > 1/8 of the live ones), and takes the sparsest
// queued chunk first: the fewest moves for the dead records it frees.
func TestEvacuateSparsestPastSlack(t *testing.T) {
	s := newTest(t, 64)
	per := uint64(s.ChunkRecords())
	for i := range 8 * per {
		put(s, i)
	}
	// Chunk 2 falls to half live, then chunk 1 to an eighth: both are
	// queued, and the dead records they hold pass the slack.
	for i := 2 * per; i < 2*per+per/2; i++ {
		del(s, i)
	}
	for i := per; i < 2*per-per/8; i++ {
		del(s, i)
	}
	s.Lock()
	defer s.Unlock()
	if sp := s.SparseLocked(); sp != 2 {
		t.Fatalf("%d chunks queued, want 2", sp)
	}
	live1 := per / 8
	s.EvacuateLocked(1)
	if c := s.Counts(); c.Evacuations != 1 || c.Moved != live1 {
		t.Fatalf("counts %+v: want chunk 1's %d records moved, the sparsest", c, live1)
	}
	// What chunk 2 holds dead is within the slack now: it waits.
	if m := s.EvacuateLocked(1); !m.Empty() || s.SparseLocked() != 1 {
		t.Fatalf("a second evacuation within the slack; %d queued", s.SparseLocked())
	}
	for i := per; i < 8*per; i++ {
		dead := i >= 2*per && i < 2*per+per/2 || i >= per && i < 2*per-per/8
		if e := lookup(s, i); (e == nil) != dead || e != nil && e.val != i {
			t.Fatalf("key %d: %v, dead %v", i, e, dead)
		}
	}
}

// Regression (issue 16): a chunk that is already at the threshold or under when
// it stops being the one being filled is queued for evacuation then; it
// used to be queued only on the death that took it exactly to the threshold
// (and not at all while it was the tail), so a chunk that left the tail
// lower kept its few survivors (and its whole memory) for good.
func TestChunkLeavingTailSparseIsEvacuated(t *testing.T) {
	s := newTest(t, 64)
	// Chunk 0 fills while all but every 100th of its records die; its
	// last record lives, so no death after it is full notes it.
	per := uint64(s.ChunkRecords())
	for i := range per {
		put(s, i)
		if i%100 != 0 && i != per-1 {
			del(s, i)
		}
	}
	// Starting chunk 1 notes chunk 0, no longer being filled, and the
	// allocation that starts a chunk evacuates what is queued first.
	put(s, per)
	s.Lock()
	live, chunks, _ := s.StorageLocked()
	s.Unlock()
	if c := s.Counts(); c.Evacuations != 1 || live != 8 || chunks != 1 {
		t.Fatalf("%d live records in %d chunks, %d evacuations; want 8 in 1, after 1", live, chunks, c.Evacuations)
	}
	for i := uint64(0); i < per; i += 100 {
		if e := lookup(s, i); e == nil || e.val != i {
			t.Fatalf("survivor %d lost by the evacuation", i)
		}
	}
}

// checkIndex checks what the writers keep of the current array beside
// its slots: every key's low bucket-hash half is its own under the
// array's seed and names its chain, and overKeys counts the keys in
// overflow buckets.
func checkIndex(t *testing.T, s *Shard[rec]) {
	t.Helper()
	s.Lock()
	defer s.Unlock()
	a := s.arr.Load()
	var over int64
	for bi := range a.buckets {
		for b := &a.buckets[bi]; b != nil; b = a.next(b) {
			tags := b.tags.Load()
			for f := ^free(tags) & laneHigh; f != 0; f &= f - 1 {
				i := lane(f)
				k := &(*Node)(s.keyRec(a, refOf(b.slots[i].Load()))).key
				hh := mix(hashOf(k), a.seed)
				if b.low[i] != uint32(hh) || uint64(b.low[i])&a.mask != uint64(bi) || tags>>(i*tagBits)&tagMask != tagOf(hh) {
					t.Fatalf("bucket %d lane %d: low %#x, tag %#x; the key's bucket hash is %#x", bi, i, b.low[i], tags>>(i*tagBits)&tagMask, hh)
				}
				if b != &a.buckets[bi] {
					over++
				}
			}
		}
	}
	if over != s.overKeys {
		t.Fatalf("overKeys = %d, %d keys lie in overflow buckets", s.overKeys, over)
	}
}

// A growth is a split: it keeps the generation's seed, places every key
// by its kept bucket-hash bits, and so never calls the hash (which reads
// the key's record); a filling shard's chains grow with its load, which
// is no reason to tidy.
func TestGrowthSplitsWithoutHashing(t *testing.T) {
	var calls atomic.Int64
	s := new(Shard[rec])
	s.Init(Config{Slots: 64, Hash: func(k *Key) uint64 { calls.Add(1); return hashOf(k) }, Seeds: seed.NewSource(1)}, moveRec)
	seed0 := s.arr.Load().seed
	const n = 200_000
	for i := range uint64(n) {
		put(s, i)
	}
	c := s.Counts()
	if c.Grows < 10 {
		t.Fatalf("%d grows from 64 slots to %d keys", c.Grows, n)
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("the growths hashed %d keys, want none", got)
	}
	if s.arr.Load().seed != seed0 {
		t.Error("a growth changed the seed")
	}
	if c.Tidies != 0 || c.Floods != 0 {
		t.Errorf("a fill tidied %d times and reseeded %d times, want none", c.Tidies, c.Floods)
	}
	checkIndex(t, s)
	for i := range uint64(n) {
		if got := lookup(s, i); got == nil || got.val != i {
			t.Fatalf("key %d lost in the growths", i)
		}
	}
}

// Under churn at a steady size, overflow buckets emptied by removals stay
// linked; the tidy rebuild drops them once they outnumber the keys in
// overflow buckets by the slack, so the linked overflow stays bounded.
func TestTidyDropsEmptiedOverflow(t *testing.T) {
	s := newTest(t, 64)
	const n = 20_000
	for i := range uint64(n) {
		put(s, i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	live := make([]uint64, n)
	for i := range live {
		live[i] = uint64(i)
	}
	next := uint64(n)
	for range 40 * n {
		j := rng.IntN(n)
		if !del(s, live[j]) {
			t.Fatalf("key %d missing", live[j])
		}
		put(s, next)
		live[j] = next
		next++
		s.Lock()
		a := s.arr.Load()
		if linked, bound := a.overflow.n.Load(), s.overKeys+max(tidyMin, int64(s.n)/tidySlack); linked > bound {
			s.Unlock()
			t.Fatalf("%d overflow buckets linked, over the bound %d", linked, bound)
		}
		s.Unlock()
	}
	if c := s.Counts(); c.Tidies == 0 {
		t.Fatal("churn never tidied the index")
	}
	checkIndex(t, s)
	for _, i := range live {
		if got := lookup(s, i); got == nil || got.val != i {
			t.Fatalf("key %d lost under churn", i)
		}
	}
}
