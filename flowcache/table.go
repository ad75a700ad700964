package flowcache

import (
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/reclaim"
	"github.com/flowcache/flowcache/seed"
	"github.com/flowcache/flowcache/shard"
	"github.com/puzpuzpuz/xsync/v3"
	uatomic "go.uber.org/atomic"
)

// Errors returned by Table methods and New. Each is wrapped with context
// (the table's name, its limit, the field at fault); match with errors.Is.
var (
	// ErrFull: an insert found the table at its Limit (and, with
	// Config.Evict, no flow it could evict). Nothing changed.
	ErrFull = errors.New("flowcache: table full")
	// ErrClosed: the table was closed. Nothing changed.
	ErrClosed = errors.New("flowcache: table closed")
	// ErrInvalidConfig: New was given a Config it cannot honour; the
	// wrapped *ConfigError names the field.
	ErrInvalidConfig = errors.New("flowcache: invalid config")
)

// ConfigError says which Config field New rejected and why. It matches
// ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("flowcache: invalid config: %s %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// DefaultTTL is the idle time after which a flow expires when Config.TTL
// is 0, as in OPTE.
const DefaultTTL = 60 * time.Second

// MaxShards is the largest shard count New accepts.
const MaxShards = 1 << 16

// MaxClasses is the most timeout classes a table has: class 0 (TTL) and
// up to MaxClasses-1 from Config.Timeouts.
const MaxClasses = shard.Classes

// Config configures a Table. Limit is required; every other field has a
// safe default.
type Config[V any] struct {
	Name   string           // the port; shows in Dump and Stats
	Limit  int              // most live flows; required, > 0
	TTL    time.Duration    // idle time after which a flow of class 0 expires; 0 means 60 s
	Shards int              // power of two; 0 picks from GOMAXPROCS
	Seed   uint64           // 0: random from crypto/rand
	Clock  func() time.Time // what the Reclaimer reads to pass to Expire; nil: time.Now
	Domain *reclaim.Domain  // nil: reclaim.Default()
	// Timeouts are the idle timeouts of classes 1..len(Timeouts), at most
	// 15, each > 0: a flow of class c expires when idle for Timeouts[c-1]
	// (conntrack's per-state timeouts). SetClass moves a flow between
	// classes; SetTimeout retunes a class live.
	Timeouts []time.Duration
	// Class, when set, gives a new flow's timeout class from its value (a
	// flow that has seen only a SYN, say), so that it starts in the right
	// class without a SetClass (and its shard lock) per new flow. It runs
	// with the shard locked: it must not call the table (a call that needs
	// that shard panics). v points at a copy of the new flow's value that
	// lasts only for the call: read it, do not keep it. A class the table
	// does not have means 0. If it panics, the insert changes nothing.
	Class func(v *V) int
	// Evict, when set, lets an insert at the limit make room: among the
	// flows near the new key's bucket (at most 64 slots of its shard) the
	// one idle longest that Evict approves leaves, with cause Evicted, in
	// the same locked step. With none approved the insert fails with
	// ErrFull. It runs with shards locked: it must not call the table (a
	// call that needs one of them panics). If it panics, the insert
	// changes nothing.
	Evict func(e *Entry[V]) bool
	// OnRemove runs once for every flow that leaves the table, with the
	// reason, after a grace period: no registered worker still holds the
	// flow from before it left. It runs on the domain's Reclaimer tick or
	// in Synchronize, one call at a time.
	OnRemove func(e *Entry[V], why Cause)
}

// Table is a concurrent flow table: one per port. Lookups take no lock;
// inserts and removals lock one shard (two for a pair). See the package
// documentation.
type Table[V any] struct {
	// Read by every lookup; now is written once per pass, the rest never:
	// kept apart from the words every insert writes.
	keys   hashKeys // the table hash's secret words, seed applied
	shards []shard.Shard[Entry[V]]
	seed   uint64 // table hash seed
	smask  uint64 // len(shards) - 1; the shard is hash >> 48 & smask (shardNo)
	baseMs int64  // time origin of slot stamps
	hits   *xsync.Counter
	misses *xsync.Counter
	now    atomic.Int64 // the coarse clock, ms since the Unix epoch: read by every hit, written by each pass
	_      [cacheLine]byte

	// Written by every insert and removal (reserve and release).
	live atomic.Int64 // exact: reserved before an insert, released after a removal
	_    [cacheLine - 8]byte

	// Read by writers and passes.
	limit    int64
	closed   atomic.Bool
	name     string
	timeouts [MaxClasses]uatomic.Duration // class 0 is TTL
	classes  int                          // 1 + len(Config.Timeouts)
	clock    func() time.Time
	domain   *reclaim.Domain
	evict    func(*Entry[V]) bool
	classOf  func(*V) int
	onRemove func(*Entry[V], Cause)
	unwatch  func()
	errFull  error
	errClose error
	faults   faults                     // tests only (export_test.go)
	feed     atomic.Pointer[Changes[V]] // the change feed, nil when none is attached (changes.go)
	// releaseValues: V holds pointers, so a flow that left has its value
	// zeroed once its grace period is over (see release), and what the
	// value pointed to can be collected although the record stays.
	releaseValues bool
	// pend counts the bytes that wait for a grace period: chunks whose
	// records moved, until their fold; flows that left, until their
	// OnRemove and release. A heap object of its own, so the deferred
	// work that holds it does not keep the table alive.
	pend *pending
	// maxNow is the latest time the coarse clock has shown: while the
	// clock is behind it (it stepped back), stamps written before the step
	// may be ahead of their flows, and passes look for them (see pass.heal).
	maxNow atomic.Int64

	// scratch is a copy of a new flow's value for Config.Class, one per
	// shard, used under that shard's lock (classFor); nil without a
	// Class. Each in a block of its own, so that writers of different
	// shards do not share its line.
	scratch []scratch[V]

	// Counters, read by Stats. What writes count (flows inserted,
	// replaced, removed, evicted, refused, and live pairs) is kept per
	// shard, in the shard a write holds (shard.TallyLocked: the tally*
	// indexes below); the pass's and Clear's counts here.
	expired, cleared, passes atomic.Uint64
	longestHold              atomic.Int64 // ns
	lastPass                 uatomic.Time
	released                 atomic.Int64
}

// The counts a table keeps in each shard's tally.
const (
	tallyInserts = iota
	tallyReplaced
	tallyRemoved
	tallyEvicted
	tallyFull
	tallyPairs // live pairs: one added per pair stored, minusOne per pair gone
)

// minusOne is -1 as a tally adds it.
const minusOne = ^uint64(0)

// scratch is one shard's copy of a new flow's value for Config.Class,
// padded so that no two shards' copies share a cache line.
type scratch[V any] struct {
	v V
	_ [cacheLine]byte
}

// cacheLine pads the table's hot words apart: 128 rather than 64 because
// x86's adjacent-line prefetcher pulls lines in pairs.
const cacheLine = 128

// faults turns off one step of the move protocol, so that tests can show
// each step is needed. Production tables never set it.
type faults struct {
	noFreeze, noGrace, noFold bool
}

// New returns an empty table, or an error that matches ErrInvalidConfig.
// The table registers its expiry pass with its domain, so a Reclaimer on
// that domain expires it; Close unregisters it.
func New[V any](cfg Config[V]) (*Table[V], error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	shards := cfg.Shards
	if shards == 0 {
		shards = defaultShards(cfg.Limit)
	}
	t := &Table[V]{
		seed:     cfg.Seed,
		smask:    uint64(shards - 1),
		shards:   make([]shard.Shard[Entry[V]], shards),
		limit:    int64(cfg.Limit),
		name:     cfg.Name,
		classes:  1 + len(cfg.Timeouts),
		clock:    cfg.Clock,
		domain:   cfg.Domain,
		evict:    cfg.Evict,
		classOf:  cfg.Class,
		onRemove: cfg.OnRemove,
		hits:     xsync.NewCounter(),
		misses:   xsync.NewCounter(),
	}
	if t.classOf != nil {
		t.scratch = make([]scratch[V], shards)
	}
	if t.seed == 0 {
		t.seed = seed.Random()
	}
	t.keys = keysFor(t.seed)
	if t.clock == nil {
		t.clock = time.Now
	}
	if t.domain == nil {
		t.domain = reclaim.Default()
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	t.timeouts[0].Store(ttl)
	for i, d := range cfg.Timeouts {
		t.timeouts[i+1].Store(d)
	}
	now := t.clock().UnixMilli()
	t.now.Store(now)
	t.maxNow.Store(now)
	t.releaseValues = shard.HasPointers(reflect.TypeFor[V]())
	t.pend = new(pending)
	// The stamps' origin lies far in the past, so that a clock that
	// steps back after New never goes below it (a stamp saturated at 0
	// would not bound the flow's age, and the pass would skip it).
	t.baseMs = now - stampSlack
	t.errFull = fmt.Errorf("%w: table %q at its limit of %d flows", ErrFull, t.name, t.limit)
	t.errClose = fmt.Errorf("%w: table %q", ErrClosed, t.name)

	// A fixed Seed makes every shard seed reproducible too; otherwise
	// each rebuild draws from crypto/rand.
	seeds := seed.NewSource(cfg.Seed)
	for i := range t.shards {
		t.shards[i].Init(shard.Config{Hash: t.hashKey, Seeds: seeds, Reentered: reentered}, t.move)
	}
	t.unwatch = reclaim.Watch(t.domain, t, func(t *Table[V]) { t.Expire(t.clock()) })
	return t, nil
}

func (cfg *Config[V]) validate() error {
	if cfg.Limit <= 0 {
		return &ConfigError{"Limit", fmt.Sprintf("must be > 0, got %d", cfg.Limit)}
	}
	if cfg.TTL < 0 {
		return &ConfigError{"TTL", fmt.Sprintf("must be >= 0, got %v", cfg.TTL)}
	}
	if s := cfg.Shards; s < 0 || s > MaxShards || s&(s-1) != 0 {
		return &ConfigError{"Shards", fmt.Sprintf("must be 0 or a power of two up to %d, got %d", MaxShards, s)}
	}
	if len(cfg.Timeouts) > MaxClasses-1 {
		return &ConfigError{"Timeouts", fmt.Sprintf("at most %d classes, got %d", MaxClasses-1, len(cfg.Timeouts))}
	}
	for i, d := range cfg.Timeouts {
		if d <= 0 {
			return &ConfigError{"Timeouts", fmt.Sprintf("class %d: must be > 0, got %v", i+1, d)}
		}
	}
	return nil
}

// defaultShards gives each core several shards, so that writers on
// different cores rarely share a mutex, but no more than leave each shard
// about 256 flows at the limit: a shard's floor is 64 slots and a chunk of
// 256 records, and a small table should not be mostly floor.
func defaultShards(limit int) int {
	n := 4 * runtime.GOMAXPROCS(0)
	n = 1 << bits.Len(uint(n-1))
	for n > 1 && limit/n < 256 {
		n /= 2
	}
	return n
}

// hitSample: a hit is counted (as hitSample hits) on one lookup in
// hitSample, chosen at random. Counting every hit with an atomic add would
// make a flow that every core hits bounce one cache line on every packet
// (invariant 10 in docs/DESIGN.md); the sampled add still writes the line
// that holds the key, so the rate matters: BenchmarkHotFlow (two goroutines
// on one flow) measured 32 Mlookups/s at 1 in 16 and 46.5 at 1 in 64.
const hitSample = 64

// sampleHit is the one place a lookup counts a hit, on every lookup path:
// on one draw in hitSample it adds a sample to the flow's estimate and
// reports it, and the caller adds hitSample to the table's estimate.
func sampleHit[V any](e *Entry[V], draw uint64) bool {
	if draw%hitSample != 0 {
		return false
	}
	e.node.Aux.Add(1)
	return true
}

// cheaprand is the runtime's cheapest random source: wyrand on a state
// kept per thread (per M), a few instructions and no shared write. Get
// draws its hit sample from it: math/rand/v2's Uint32 reaches the
// runtime's ChaCha8 generator through an interface call, and cost as
// much as the rest of a hit's arithmetic (docs/PERFORMANCE.md). The draw
// is independent of the flow, so the sampled count stays an unbiased
// estimate (TestHitsEstimate). The runtime exports the symbol for
// linkname and promises to keep its signature (go.dev/issue/67401).
//
//go:linkname cheaprand runtime.cheaprand
func cheaprand() uint32

// stampShift: slot stamps count 1024 ms units since the table's base time.
// 32 bits of them last 139 years, and a pass touches an entry only in the
// last unit before it could expire.
const stampShift = 10

// stampSlack is how far before New the stamps' origin lies: 2^40 ms, about
// 35 years, which leaves 100 years of 32-bit stamps after it.
const stampSlack = 1 << 40

// hashKey is hash for a key the shard holds: a shard.Key is a FlowKey's
// five words (skey), so it hashes the same.
func (t *Table[V]) hashKey(k *shard.Key) uint64 { return t.hash((*FlowKey)(unsafe.Pointer(k))) }

// hash is the table hash of k: xxh3 of its 40 bytes with the table seed.
func (t *Table[V]) hash(k *FlowKey) uint64 {
	return t.keys.sum(le64(k.w0), le64(k.w1), le64(k.w2), le64(k.w3), le64(k.w4))
}

// shardNo is the index of the shard of table hash h, taken from its top
// 16 bits (MaxShards is 1 << 16): a shift by a constant and a mask, where
// a shift by 64 − log2(shards) needed a guard for the shift count of 64
// that one shard gives (4 instructions more on every lookup).
func (t *Table[V]) shardNo(h uint64) uint64 { return shardNo(h, t.smask) }

func shardNo(h, smask uint64) uint64 { return h >> 48 & smask }

// shardOf is the shard of table hash h: shardNo(h) is at most t.smask,
// below len(t.shards), so the shard is taken from the slice's base
// without a bounds check.
func (t *Table[V]) shardOf(h uint64) *shard.Shard[Entry[V]] {
	return (*shard.Shard[Entry[V]])(shardAt(unsafe.Pointer(unsafe.SliceData(t.shards)), t.smask, h))
}

// shardAt is shardOf's address arithmetic, for Get: a generic method
// inlined into Get (shardOf) costs it a load and a nil check of its
// dictionary, a function that is not generic nothing.
func shardAt(shards unsafe.Pointer, smask, h uint64) unsafe.Pointer {
	return unsafe.Add(shards, uintptr(shardNo(h, smask))*shardSize)
}

// shardSize is the size of a shard.Shard, whatever its record type (the
// shard's untyped core and its padding): a constant, where the size of
// t.shards[0] cost Get a load from its generic dictionary.
const shardSize = unsafe.Sizeof(shard.Shard[struct{}]{})

var _ [0]struct{} = [unsafe.Sizeof(shard.Shard[Entry[[64]byte]]{}) - shardSize]struct{}{}

// skey views a FlowKey as the shard's Key: both are 40 bytes, 8-aligned
// (FlowKey's [0]uint64), with no pointers, so the shard may compare it a
// word at a time.
func skey(k *FlowKey) *shard.Key { return (*shard.Key)(unsafe.Pointer(k)) }

// mustInit makes a zero Table fail loudly instead of acting as an empty
// one that drops every insert.
func (t *Table[V]) mustInit() {
	if t.shards == nil {
		panic("flowcache: Table used without New (a zero Table is not usable)")
	}
}

// stamp is the slot stamp for a time in ms.
func (t *Table[V]) stamp(ms int64) uint32 {
	return uint32(max(ms-t.baseMs, 0) >> stampShift)
}

// Get returns the flow stored under k, either of a pair's keys. It takes
// no lock, allocates nothing, and does not read the clock: it refreshes
// the flow's last-seen time from the table's coarse clock, and only when
// that has ticked since the last refresh, so a flow that every core hits
// is written once a tick.
//
// The key comes by value, in registers: a FlowKey is five words, which
// Go's register ABI passes as five registers, so a key handed to Get
// through a program's own by-value wrapper costs what one read from a
// slice costs. Get is not a small wrapper over a body that takes the
// key's address: inlined into its caller, such a wrapper copies its
// 40-byte argument into a variable of its own with 16-byte moves, which
// read the caller's 8-byte stores of the same key; the CPU cannot forward
// those stores to the loads, which wait for them to retire, behind the
// previous lookup's cache misses, and consecutive lookups stop
// overlapping (1.8x slower at 1M flows through a wrapper, measured in
// docs/PERFORMANCE.md). Get's own frame holds the key as five 8-byte
// stores, which every later load of it matches.
func (t *Table[V]) Get(k FlowKey) (*Entry[V], bool) {
	if t.shards == nil {
		// t.mustInit(), with the test on the line (an inlined call
		// with nothing else on its line costs a NOP).
		t.mustInit()
	}
	// t.hash(&k), written out (hashKeys.sum is over the inliner's
	// budget; its halves are not), so that the hash, the shard's choice
	// and the lookup are one call.
	w0, w1, w2, w3, w4 := le64(k.w0), le64(k.w1), le64(k.w2), le64(k.w3), le64(k.w4)
	h := t.keys.avalanche(t.keys.lo(w0, w1, w2) + t.keys.hi(w2, w3, w4))
	p, sure := (*shard.Shard[Entry[V]])(shardAt(unsafe.Pointer(unsafe.SliceData(t.shards)), t.smask, h)).Find(h, skey(&k))
	e := (*Entry[V])(p)
	if e == nil {
		if !sure {
			// A case Find leaves to Lookup (see Find): rare, so h is
			// hashed again rather than kept across the call.
			e = t.lookupKey(&k)
		}
		if e == nil {
			t.misses.Inc()
			return nil, false
		}
	}
	// The refresh and the hit sample, written out rather than called:
	// the compiler does not inline calls inside a generic body that
	// another package instantiates, and the common hit does neither.
	if now := t.now.Load(); e.lastSeen.Load() != now && !t.refreshKey(e, &k, now) {
		// A released record, reached through a slot word loaded before
		// its flow left (see refresh): look again, off the hot path.
		if e = t.lookupLive(&k, t.hash(&k)); e == nil {
			t.misses.Inc()
			return nil, false
		}
	}
	if cheaprand()%hitSample == 0 {
		t.sampled(e)
	}
	return e, true
}

// touch refreshes a flow that a lookup found through the slot word w, as
// Get does, and reports false when the record was released (see refresh).
func (t *Table[V]) touch(e *Entry[V], slot *atomic.Uint64, w uint64) bool {
	if now := t.now.Load(); e.lastSeen.Load() != now {
		return t.refresh(e, slot, w, now)
	}
	return true
}

// refreshKey is refresh for Get, whose lookup (Find) returns the record
// alone: it looks k up again for the slot and its word. When the
// slot no longer names e (the flow moved or left since Get found it, and
// another record may hold the slot), it refreshes last seen alone: the
// stamp stays as it was, early, which a stamp may be (invariant 12).
func (t *Table[V]) refreshKey(e *Entry[V], k *FlowKey, now int64) bool {
	h := t.hash(k)
	f, slot, w := t.shardOf(h).Lookup(h, skey(k))
	if f != e {
		slot = nil
	}
	return t.refresh(e, slot, w, now)
}

// refresh writes a flow's last-seen time, once per tick, and its slot's
// stamp, with a compare-and-swap against the word the lookup read. If the
// flow left and another took the slot since, the swap fails, so the
// newcomer's stamp never says it was seen later than it was (invariant
// 12 in docs/DESIGN.md).
//
// It reports false, and writes nothing, when e's value was released (the
// flow left long ago and the lookup reached it through a slot word loaded
// before): the caller looks again, so that no lookup returns a record
// whose value is being zeroed (release).
func (t *Table[V]) refresh(e *Entry[V], slot *atomic.Uint64, w uint64, now int64) bool {
	ls := e.lastSeen.Load()
	for {
		if ls == releasedMark {
			return false
		}
		if e.lastSeen.CompareAndSwap(ls, now) {
			break
		}
		ls = e.lastSeen.Load()
	}
	back := now < ls
	if e.state.Load()&moved != 0 {
		// A move copied e before this refresh landed (the lookup read an
		// old array, or an unregistered reader raced the move): write the
		// flow's home too, hop by hop, so the refresh is not lost
		// whatever the reader (see move).
		for h := e; h.state.Load()&moved != 0; {
			h = h.forward()
			if l := h.lastSeen.Load(); l != releasedMark {
				h.lastSeen.CompareAndSwap(l, now)
			}
		}
	}
	if slot == nil {
		return true
	}
	st := t.stamp(now)
	if shard.StampOf(w) != st {
		slot.CompareAndSwap(w, shard.WithStamp(w, st))
	}
	if back && shard.IsReplyWord(w) {
		// The clock stepped back and the lookup came through a pair's
		// reply key: the stamp the pass reads is the first key's, and it
		// now says the flow was seen later than it was. Lower it too.
		t.restampFirst(e, st)
	}
	return true
}

// lookupLive is the flow stored under k, whose hash is h, refreshed, for
// a batch whose candidate record turned out to be released: Get without
// the counting.
func (t *Table[V]) lookupLive(k *FlowKey, h uint64) *Entry[V] {
	for {
		e, slot, w := t.shardOf(h).Lookup(h, skey(k))
		if e == nil || t.touch(e, slot, w) {
			return e
		}
	}
}

// lookupKey is the flow stored under k, for Get when Find cannot tell.
func (t *Table[V]) lookupKey(k *FlowKey) *Entry[V] {
	h := t.hash(k)
	e, _, _ := t.shardOf(h).Lookup(h, skey(k))
	return e
}

// restampFirst lowers the stamp of e's first key to st, if the slot still
// holds e. Rare: only after the clock steps back.
func (t *Table[V]) restampFirst(e *Entry[V], st uint32) {
	k := e.Key()
	h := t.hash(&k)
	if f, slot, w := t.shardOf(h).Lookup(h, skey(&k)); f == e && shard.StampOf(w) > st {
		slot.CompareAndSwap(w, shard.WithStamp(w, st))
	}
}

// sampled counts a sampled hit: hitSample hits on the flow's estimate and
// the table's.
func (t *Table[V]) sampled(e *Entry[V]) {
	e.node.Aux.Add(1)
	t.hits.Add(hitSample)
}

// Len is the number of live flows (a pair counts once). It never exceeds
// Limit.
func (t *Table[V]) Len() int { t.mustInit(); return int(t.live.Load()) }

// Limit is the most live flows the table holds.
func (t *Table[V]) Limit() int { t.mustInit(); return int(t.limit) }

// Name is the table's name from its Config.
func (t *Table[V]) Name() string { t.mustInit(); return t.name }

// SetTTL changes the idle timeout of class 0: SetTimeout(0, d).
func (t *Table[V]) SetTTL(d time.Duration) { t.SetTimeout(0, d) }

// TTL is the current idle timeout of class 0.
func (t *Table[V]) TTL() time.Duration { t.mustInit(); return t.timeouts[0].Load() }

// SetTimeout changes a class's idle timeout, live, as conntrack's
// per-state sysctls allow: the next pass expires exactly the flows of the
// class idle for at least d, whether d is lower or higher than before.
// For class 0 a d <= 0 restores the default (60 s); for the other classes
// d <= 0 and a class the table does not have are ignored.
func (t *Table[V]) SetTimeout(class int, d time.Duration) {
	t.mustInit()
	switch {
	case class == 0 && d <= 0:
		d = DefaultTTL
	case class < 0 || class >= t.classes || d <= 0:
		return
	}
	t.timeouts[class].Store(d)
}

// Timeout is a class's idle timeout, or 0 for a class the table does not
// have.
func (t *Table[V]) Timeout(class int) time.Duration {
	t.mustInit()
	if class < 0 || class >= t.classes {
		return 0
	}
	return t.timeouts[class].Load()
}

// Close clears the table (every flow's OnRemove is deferred to the domain
// with cause Cleared), unregisters it from its domain's Reclaimer, and
// makes later inserts fail with ErrClosed. It is idempotent.
func (t *Table[V]) Close() error {
	t.mustInit()
	if t.closed.Swap(true) {
		return nil
	}
	t.unwatch()
	t.Clear()
	return nil
}
