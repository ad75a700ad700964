package shard

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/flowcache/flowcache/seed"
)

// Key is what the shard compares: 40 bytes seen as five words, so a key
// compares in five 64-bit loads. The shard never looks inside it.
type Key [5]uint64

// Node is the part of a stored entry that the shard reads. The owner embeds
// it as the first field of its entry type, so that a *Node found by a lookup
// is a pointer to the whole entry.
type Node struct {
	key Key
}

// Key returns the node's key. It never changes after the node is stored.
func (n *Node) Key() *Key { return &n.key }

// Equal compares two keys a word at a time. Written out, it inlines;
// == on the array calls the runtime's memequal.
func (k *Key) Equal(o *Key) bool {
	return k[0] == o[0] && k[1] == o[1] && k[2] == o[2] && k[3] == o[3] && k[4] == o[4]
}

// SetKey sets the key of a node that has not been stored yet.
func (n *Node) SetKey(k *Key) { n.key = *k }

// Stamp is the per-slot word that an owner may use as it likes (flowcache
// keeps a coarse last-seen time there, so that an expiry pass streams the
// bucket array instead of chasing every entry pointer). Loads and stores
// are atomic; the shard only copies it on rebuild.
type Stamp = atomic.Uint32

const (
	slotsPerBucket = 4
	tagBits        = 16
	// lanes and their high bits, for matching four 16-bit tags at once.
	laneLow15 = 0x7fff_7fff_7fff_7fff
	laneHigh  = 0x8000_8000_8000_8000
	laneOnes  = 0x0001_0001_0001_0001
)

// bucket is one cache line; see doc.go for the picture.
type bucket struct {
	tags   atomic.Uint64         // four 16-bit tags, 0 = free slot
	stamps [slotsPerBucket]Stamp // owner's coarse words, one per slot
	slots  [slotsPerBucket]atomic.Pointer[Node]
	next   atomic.Pointer[bucket] // overflow chain; never unlinked while published
}

var _ [64 - unsafe.Sizeof(bucket{})]struct{}

// array is one immutable-shape generation of a shard's table. A rebuild
// makes a new array; the old one is never written again, except for
// owner stamps, which are advisory.
type array struct {
	seed     uint64 // this generation's shard seed
	gen      uint64 // how many arrays the shard published before this one
	mask     uint64 // len(buckets) - 1
	buckets  []bucket
	overflow atomic.Int64 // overflow buckets linked so far; atomic because Stats reads it without the mutex
}

// Hasher gives a key's table-level hash. The shard calls it only when it
// rebuilds, to place every live key in the new array.
type Hasher func(*Key) uint64

// Config configures a shard.
type Config struct {
	// Slots is the initial slot capacity; it is rounded up to a power of
	// two, at least MinSlots.
	Slots int
	// MaxChain is how many overflow buckets a chain may have before an
	// insert rebuilds the shard with a fresh seed. 0 means DefaultMaxChain;
	// a negative value turns the defence off (tests of the attack only).
	MaxChain int
	// Hash gives a key's hash; required.
	Hash Hasher
	// Seeds gives a fresh shard seed for every rebuild; required.
	Seeds *seed.Source
}

const (
	// MinSlots is the smallest slot capacity a shard is built with.
	MinSlots = 64
	// DefaultMaxChain is the overflow chain bound. At the highest load the
	// shard allows (3/4 of its slots) a bucket receives Poisson(3) keys, and
	// the chance that one receives more than 4×(1+4)=20 is about 1e-10: a
	// chain this long is an attack, not bad luck.
	DefaultMaxChain = 4
	// maxLoadNum/maxLoadDen is the load at which an insert grows the shard.
	maxLoadNum, maxLoadDen = 3, 4
	// floodRetries bounds the seeds a flood rebuild tries before it keeps
	// the last one: keys that collide for every seed share the full 64-bit
	// table hash, which only a caller who knows the table seed can build.
	floodRetries = 3
)

// Shard is one concurrent hash table. Its zero value is not usable; use New.
//
// Lookups (Lookup) take no lock and only load. Writers (everything named
// *Locked, and Rebuild) hold the shard's mutex: call Lock first.
type Shard struct {
	// Read by every lookup: alone on its cache line so that writers
	// taking the mutex do not invalidate it.
	arr atomic.Pointer[array]
	_   [56]byte

	mu       sync.Mutex
	n        int // live nodes, under mu
	maxChain int
	hash     Hasher
	seeds    *seed.Source
	// insertsSinceFlood rate-limits flood rebuilds when keys collide for
	// every seed (see floodRetries).
	insertsSinceFlood int

	live    atomic.Int64 // mirror of n for lock-free readers of Len
	grows   atomic.Uint64
	shrinks atomic.Uint64
	floods  atomic.Uint64
	_       [24]byte
}

// New returns an empty shard.
func New(cfg Config) *Shard {
	s := &Shard{}
	s.Init(cfg)
	return s
}

// Init makes s an empty shard; it is for owners that keep shards in an
// array (padded and contiguous) rather than behind pointers.
func (s *Shard) Init(cfg Config) {
	if cfg.Hash == nil || cfg.Seeds == nil {
		panic("shard: Config.Hash and Config.Seeds are required")
	}
	s.hash = cfg.Hash
	s.seeds = cfg.Seeds
	s.maxChain = cfg.MaxChain
	if s.maxChain == 0 {
		s.maxChain = DefaultMaxChain
	}
	s.arr.Store(newArray(cfg.Slots, s.seeds.Uint64()))
}

func bucketsFor(slots int) int {
	slots = max(slots, MinSlots)
	b := (slots + slotsPerBucket - 1) / slotsPerBucket
	return 1 << bits.Len(uint(b-1))
}

func newArray(slots int, seed uint64) *array {
	n := bucketsFor(slots)
	return &array{seed: seed, mask: uint64(n - 1), buckets: make([]bucket, n)}
}

// mix turns the table hash into this generation's bucket hash. A fresh
// shard seed moves every key to an unrelated bucket, which is what undoes
// a flood of keys crafted to share one bucket.
func mix(h, seed uint64) uint64 {
	hi, lo := bits.Mul64(h^seed, 0x9e3779b97f4a7c15)
	return hi ^ lo
}

// tagOf takes the tag from the bits the bucket index does not use; 0 marks
// a free slot, so a zero tag becomes 1.
func tagOf(h uint64) uint64 {
	t := h >> (64 - tagBits)
	if t == 0 {
		t = 1
	}
	return t
}

// match returns a word with the high bit of every lane of tags that equals
// tag. It is exact: the low 15 bits of each lane are added without carrying
// into the next lane.
func match(tags, tag uint64) uint64 {
	x := tags ^ (tag * laneOnes)
	y := (x & laneLow15) + laneLow15
	return ^(y | x | laneLow15)
}

// free returns the high bit of every lane of tags that is 0.
func free(tags uint64) uint64 { return match(tags, 0) }

func lane(m uint64) int { return bits.TrailingZeros64(m) / tagBits }

// Lookup finds the node stored under key k, whose table hash is h, and the
// stamp of its slot. It takes no lock and writes nothing, and is correct
// while writers and rebuilds run (see doc.go). It returns nil when k is not
// present.
func (s *Shard) Lookup(h uint64, k *Key) (*Node, *Stamp) {
	p := s.Locate(h)
	if n, b, i := p.walk(k); n != nil {
		return n, &b.stamps[i]
	}
	return nil, nil
}

// Lock takes the shard's writer mutex. Lookups never take it.
func (s *Shard) Lock() { s.mu.Lock() }

// Unlock releases the writer mutex.
func (s *Shard) Unlock() { s.mu.Unlock() }

// position is where a key lives in the current array.
type position struct {
	b *bucket
	i int
}

func (s *Shard) find(a *array, h uint64, k *Key) (position, bool) {
	hh := mix(h, a.seed)
	p := Probe{b: &a.buckets[hh&a.mask], tag: tagOf(hh)}
	if n, b, i := p.walk(k); n != nil {
		return position{b, i}, true
	}
	return position{}, false
}

// FindLocked is Lookup for a writer holding the mutex.
func (s *Shard) FindLocked(h uint64, k *Key) *Node {
	a := s.arr.Load()
	if p, ok := s.find(a, h, k); ok {
		return p.b.slots[p.i].Load()
	}
	return nil
}

// InsertLocked stores n, whose key must not be present, with stamp as its
// slot's stamp. It may grow the shard, or rebuild it with a fresh seed when
// the key's chain is over its bound. It reports the rebuild it did.
func (s *Shard) InsertLocked(h uint64, n *Node, stamp uint32) Rebuilt {
	a := s.arr.Load()
	chain := place(a, h, n, stamp)
	s.n++
	s.live.Store(int64(s.n))
	s.insertsSinceFlood++
	// Grow first: a full shard has long chains for an honest reason.
	if s.n*maxLoadDen > len(a.buckets)*slotsPerBucket*maxLoadNum {
		s.rebuild(2 * s.n)
		s.grows.Add(1)
		return Grown
	}
	if s.maxChain > 0 && chain > s.maxChain && s.insertsSinceFlood > s.n/2 {
		// A chain this long at a load under 3/4 is a flood: move every
		// key under a fresh seed the sender cannot know.
		s.insertsSinceFlood = 0
		s.floods.Add(1)
		for range floodRetries {
			if s.rebuild(len(a.buckets)*slotsPerBucket) <= s.maxChain {
				break
			}
		}
		return Reseeded
	}
	return None
}

// place stores n in the first free slot of its chain, linking an overflow
// bucket when the chain is full, and returns how many overflow buckets the
// chain has. The caller holds the mutex (or owns a not yet published a).
func place(a *array, h uint64, n *Node, stamp uint32) int {
	hh := mix(h, a.seed)
	tag := tagOf(hh)
	b := &a.buckets[hh&a.mask]
	depth := 0
	for {
		t := b.tags.Load()
		if f := free(t); f != 0 {
			i := lane(f)
			b.stamps[i].Store(stamp)
			// Publish the node before its tag: a reader that matches
			// the tag must find the node.
			b.slots[i].Store(n)
			b.tags.Store(t | tag<<(i*tagBits))
			return depth
		}
		next := b.next.Load()
		if next == nil {
			nb := &bucket{}
			nb.stamps[0].Store(stamp)
			nb.slots[0].Store(n)
			nb.tags.Store(tag)
			// Fill the bucket before linking it: a reader that follows
			// the link sees a complete bucket.
			b.next.Store(nb)
			a.overflow.Add(1)
			return depth + 1
		}
		b = next
		depth++
	}
}

// ReplaceLocked stores n in place of the node with the same key and
// returns the old one, or nil when the key is not present (then nothing
// changes). Readers see the old node or the new one, never neither.
func (s *Shard) ReplaceLocked(h uint64, n *Node) *Node {
	a := s.arr.Load()
	p, ok := s.find(a, h, &n.key)
	if !ok {
		return nil
	}
	old := p.b.slots[p.i].Load()
	p.b.slots[p.i].Store(n)
	return old
}

// RemoveLocked removes the node stored under k and returns it, or nil.
func (s *Shard) RemoveLocked(h uint64, k *Key) *Node {
	a := s.arr.Load()
	p, ok := s.find(a, h, k)
	if !ok {
		return nil
	}
	return s.clear(p)
}

func (s *Shard) clear(p position) *Node {
	n := p.b.slots[p.i].Load()
	// Clear the tag before the slot: a reader that still matched the
	// old tag finds the node or nil, and nil reads as a miss.
	p.b.tags.Store(p.b.tags.Load() &^ (uint64(1<<tagBits-1) << (p.i * tagBits)))
	p.b.slots[p.i].Store(nil)
	s.n--
	s.live.Store(int64(s.n))
	return n
}

// Rebuilt says what rebuild an insert did.
type Rebuilt uint8

// The rebuilds an insert can do.
const (
	None     Rebuilt = iota
	Grown            // the load passed 3/4: rebuilt at twice the live count
	Reseeded         // a chain passed its bound: rebuilt with a fresh seed
)

// Rebuild builds a new array with room for slots slots (rounded up to a
// power of two and at least MinSlots) and a fresh seed, copies every live
// node into it and publishes it with one atomic store. Readers that loaded
// the old array go on reading it; it is never written again. The caller
// holds the mutex. It returns the bytes of bucket memory the old array
// held.
func (s *Shard) Rebuild(slots int) (released int64) {
	old := s.arr.Load()
	released = arrayBytes(old)
	s.rebuild(slots)
	return released
}

// ShrinkLocked counts a rebuild done by Rebuild as a shrink in Stats.
func (s *Shard) ShrinkLocked(slots int) (released int64) {
	r := s.Rebuild(slots)
	s.shrinks.Add(1)
	return r
}

// rebuild returns the longest overflow chain of the new array.
func (s *Shard) rebuild(slots int) int {
	old := s.arr.Load()
	a := newArray(max(slots, s.n), s.seeds.Uint64())
	longest := 0
	for bi := range old.buckets {
		for b := &old.buckets[bi]; b != nil; b = b.next.Load() {
			t := b.tags.Load()
			for i := range slotsPerBucket {
				if t>>(i*tagBits)&(1<<tagBits-1) == 0 {
					continue
				}
				n := b.slots[i].Load()
				longest = max(longest, place(a, s.hash(&n.key), n, b.stamps[i].Load()))
			}
		}
	}
	// One store publishes the whole new generation: a reader loads
	// either the old array or the complete new one.
	a.gen = old.gen + 1
	s.arr.Store(a)
	return longest
}

func arrayBytes(a *array) int64 {
	return (int64(len(a.buckets)) + a.overflow.Load()) * int64(unsafe.Sizeof(bucket{}))
}

// Len is the number of live nodes. It is exact under the mutex and a
// recent value without it.
func (s *Shard) Len() int { return int(s.live.Load()) }

// Slots is the slot capacity of the current array, overflow not counted.
func (s *Shard) Slots() int { return len(s.arr.Load().buckets) * slotsPerBucket }

// Bytes is the bucket memory the current array holds, overflow included.
// Under the mutex it is exact.
func (s *Shard) Bytes() int64 { return arrayBytes(s.arr.Load()) }

// Counts is what a shard has done, for Stats.
type Counts struct {
	Grows, Shrinks, Floods uint64
}

// Counts returns the shard's rebuild counters.
func (s *Shard) Counts() Counts {
	return Counts{Grows: s.grows.Load(), Shrinks: s.shrinks.Load(), Floods: s.floods.Load()}
}

// Slot is one occupied slot seen by Scan.
type Slot struct {
	b *bucket
	i int
}

// Stamp returns the slot's stamp word.
func (sl Slot) Stamp() *Stamp { return &sl.b.stamps[sl.i] }

// Node returns the slot's node.
func (sl Slot) Node() *Node { return sl.b.slots[sl.i].Load() }

// Scan calls fn for every occupied slot of the current array, in bucket
// order, with the mutex held by the caller. It reads the tag words and
// stamps as a stream and loads a node only when fn asks for it, so a pass
// that looks only at stamps touches no entry. fn may call RemoveSlot on the
// slot it is given, and nothing else that writes.
func (s *Shard) Scan(fn func(Slot)) {
	a := s.arr.Load()
	for bi := range a.buckets {
		for b := &a.buckets[bi]; b != nil; b = b.next.Load() {
			t := b.tags.Load()
			for f := ^free(t) & laneHigh; f != 0; f &= f - 1 {
				fn(Slot{b, lane(f)})
			}
		}
	}
}

// Generation counts the arrays the shard has published: it changes on
// every rebuild and clear. A count, not the array's address, because a
// freed array's address can come back for a new one.
func (s *Shard) Generation() uint64 { return s.arr.Load().gen }

// Buckets is the bucket count of the current array.
func (s *Shard) Buckets() int { return len(s.arr.Load().buckets) }

// RemoveSlot removes the node in sl, found by Scan under the mutex, and
// returns it.
func (s *Shard) RemoveSlot(sl Slot) *Node { return s.clear(position(sl)) }

// Nodes appends every live node to dst, under the mutex held by the
// caller, and returns it: a consistent snapshot of the shard.
func (s *Shard) Nodes(dst []*Node) []*Node {
	s.Scan(func(sl Slot) { dst = append(dst, sl.Node()) })
	return dst
}

// ClearLocked drops every node, replaces the array with an empty one of
// MinSlots slots and a fresh seed, and returns the nodes it dropped and the
// bucket bytes released.
func (s *Shard) ClearLocked(dst []*Node) ([]*Node, int64) {
	dst = s.Nodes(dst)
	released := arrayBytes(s.arr.Load())
	s.n = 0
	s.live.Store(0)
	a := newArray(MinSlots, s.seeds.Uint64())
	a.gen = s.arr.Load().gen + 1
	s.arr.Store(a)
	return dst, released
}

// LongestChain is the longest overflow chain of the current array, in
// overflow buckets. It walks the whole array; the caller holds the mutex.
func (s *Shard) LongestChain() int {
	a := s.arr.Load()
	longest := 0
	for bi := range a.buckets {
		d := 0
		for b := a.buckets[bi].next.Load(); b != nil; b = b.next.Load() {
			d++
		}
		longest = max(longest, d)
	}
	return longest
}

// BucketOf is the bucket index key hash h has in the current array; it is
// for tests of the flood defence (an attacker who knows the seed).
func (s *Shard) BucketOf(h uint64) uint64 {
	a := s.arr.Load()
	return mix(h, a.seed) & a.mask
}

// Probe is one key's lookup split into steps, for batch lookups that want
// the cache misses of many keys in flight at once: Locate every key (no
// memory touched but the shard's array header), then Candidate every key
// (one bucket load each, independent of each other), then Resolve every key
// (one entry load each). Each step's loads are independent across keys,
// so the CPU overlaps their misses; a key that needs more (a tag that
// matched the wrong entry, an overflow chain) finishes with a full walk.
type Probe struct {
	b   *bucket
	tag uint64
}

// Locate computes where the chain of hash h starts in the current array.
// It loads the array pointer only.
func (s *Shard) Locate(h uint64) Probe {
	a := s.arr.Load()
	hh := mix(h, a.seed)
	return Probe{b: &a.buckets[hh&a.mask], tag: tagOf(hh)}
}

// Candidate loads the probe's first bucket and returns the node in the
// first slot whose tag matches, or nil, and that slot's lane.
func (p *Probe) Candidate() (*Node, int) {
	// Tag first, then slot, as in Lookup.
	if m := match(p.b.tags.Load(), p.tag); m != 0 {
		i := lane(m)
		return p.b.slots[i].Load(), i
	}
	return nil, 0
}

// Resolve finishes the lookup of k given Candidate's answer: the node and
// its slot's stamp, or nil when k is not present. It walks the whole chain
// again only when the candidate is not k's node.
func (p *Probe) Resolve(n *Node, i int, k *Key) (*Node, *Stamp) {
	if n != nil && n.key.Equal(k) {
		return n, &p.b.stamps[i]
	}
	if n, b, i := p.walk(k); n != nil {
		return n, &b.stamps[i]
	}
	return nil, nil
}

// walk searches the probe's whole chain for k: every slot whose tag
// matches, bucket by bucket. It returns the node, its bucket and lane, or
// a nil node.
func (p *Probe) walk(k *Key) (*Node, *bucket, int) {
	for b := p.b; b != nil; b = b.next.Load() {
		// Tag first, then slot: writers publish a slot before its tag,
		// so a matching tag has its node (or nil, if it is being
		// removed, which reads as a miss).
		for m := match(b.tags.Load(), p.tag); m != 0; m &= m - 1 {
			i := lane(m)
			if n := b.slots[i].Load(); n != nil && n.key.Equal(k) {
				return n, b, i
			}
		}
	}
	return nil, nil, 0
}

// StaleStep appends to dst every occupied slot in the buckets [from, to)
// of the current array whose stamp is below cut (overflow buckets
// included), and returns dst and the array's bucket count. It streams tag
// and stamp words and loads no node, which is what lets an expiry pass
// cost little per flow. The caller holds the mutex; it may remove the
// returned slots (RemoveSlot) before it unlocks.
//
// It is written for the pass's hot loop. Per bucket it compares all four stamps without a branch (an unsigned difference's
// top bit is the comparison) and masks the result with the occupied
// lanes, so it branches only on a bucket that holds a stale slot, which in
// a pass that expires little is rare; visiting the occupied lanes one by
// one costs a mispredicted branch on most buckets, whose occupancy is
// random. Overflow buckets, which are separate allocations, are visited
// after the main buckets of the step, from a list: their loads do not
// depend on each other, so their cache misses overlap instead of stalling
// the stream one at a time.
func (s *Shard) StaleStep(from, to int, cut uint32, dst []Slot) ([]Slot, int) {
	a := s.arr.Load()
	to = min(to, len(a.buckets))
	c := uint64(cut)
	var over [64]*bucket
	n := 0
	for bi := from; bi < to; bi++ {
		b := &a.buckets[bi]
		dst = b.stale(c, dst)
		if nb := b.next.Load(); nb != nil {
			if n == len(over) {
				dst = staleChains(over[:n], c, dst)
				n = 0
			}
			over[n] = nb
			n++
		}
	}
	return staleChains(over[:n], c, dst), len(a.buckets)
}

// stale appends b's occupied slots whose stamp is below c.
func (b *bucket) stale(c uint64, dst []Slot) []Slot {
	lt := (uint64(b.stamps[0].Load())-c)>>63<<15 |
		(uint64(b.stamps[1].Load())-c)>>63<<31 |
		(uint64(b.stamps[2].Load())-c)>>63<<47 |
		(uint64(b.stamps[3].Load())-c)>>63<<63
	for m := lt &^ free(b.tags.Load()); m != 0; m &= m - 1 {
		dst = append(dst, Slot{b, lane(m)})
	}
	return dst
}

func staleChains(chains []*bucket, c uint64, dst []Slot) []Slot {
	for _, b := range chains {
		for ; b != nil; b = b.next.Load() {
			dst = b.stale(c, dst)
		}
	}
	return dst
}

// Tags loads the probe's first tag word: a batch calls it for every key
// before Candidate, so the bucket misses overlap without waiting on
// Candidate's branches.
func (p *Probe) Tags() uint64 { return p.b.tags.Load() }
