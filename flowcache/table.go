package flowcache

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/flowcache/flowcache/reclaim"
	"github.com/flowcache/flowcache/seed"
	"github.com/flowcache/flowcache/shard"
	"github.com/puzpuzpuz/xsync/v3"
	"github.com/zeebo/xxh3"
	uatomic "go.uber.org/atomic"
)

// Errors returned by Table methods and New. Each is wrapped with context
// (the table's name, its limit, the field at fault); match with errors.Is.
var (
	// ErrFull: an insert found the table at its Limit. Nothing changed.
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

// Config configures a Table. Limit is required; every other field has a
// safe default.
type Config[V any] struct {
	Name     string                          // the port; shows in Dump and Stats
	Limit    int                             // most live flows; required, > 0
	TTL      time.Duration                   // idle time after which a flow expires; 0 means 60 s
	Expiry   func(e *Entry[V]) time.Duration // optional per-flow TTL (e.g. by TCP state); overrides TTL; runs in the pass with a shard locked, so it must not call the table
	Shards   int                             // power of two; 0 picks from GOMAXPROCS
	Seed     uint64                          // 0: random from crypto/rand
	Clock    func() time.Time                // what the Reclaimer reads to pass to Expire; nil: time.Now
	Domain   *reclaim.Domain                 // nil: reclaim.Default()
	OnExpire func(k FlowKey, v *V)           // after a grace period, once for each expired, removed, replaced or cleared flow
}

// Entry is one flow. Its key never changes; its value is shared by every
// worker that finds it. A replaced or removed entry stays valid for a
// worker that still holds it (the garbage collector sees to that); its
// OnExpire callback waits for a grace period.
type Entry[V any] struct {
	node     shard.Node   // the key; first, so a *shard.Node is a *Entry
	lastSeen atomic.Int64 // ms since the Unix epoch, from the table's coarse clock
	hits     atomic.Uint64
	value    V
}

// Key is the flow's key.
func (e *Entry[V]) Key() FlowKey { return *(*FlowKey)(unsafe.Pointer(e.node.Key())) }

// Value is the flow's state, shared by every worker: mutate it only
// through atomics or a lock of your own.
func (e *Entry[V]) Value() *V { return &e.value }

// Hits estimates how many lookups found this flow. It is sampled (see
// hitSample), so it is an unbiased estimate whose relative error is about
// sqrt(63/n) after n hits: ±8 % at 10 000 hits, ±0.8 % at a million.
func (e *Entry[V]) Hits() uint64 { return e.hits.Load() }

// LastSeen is when a lookup or insert last touched the flow, by the
// table's coarse clock (exact to one Expire pass).
func (e *Entry[V]) LastSeen() time.Time { return time.UnixMilli(e.lastSeen.Load()) }

// hitSample: a hit is counted (as hitSample hits) on one lookup in
// hitSample, chosen at random. Counting every hit with an atomic add would
// make a flow that every core hits bounce one cache line on every packet
// (DESIGN.md invariant 10); the sampled add still writes the line that
// holds the key, so the rate matters: BenchmarkHotFlow (two goroutines on
// one flow) measured 32 Mlookups/s at 1 in 16 and 46.5 at 1 in 64.
const hitSample = 64

// stampShift: slot stamps count 1024 ms units since the table's base time.
// 32 bits of them last 139 years, and a pass touches an entry only in the
// last unit before it could expire.
const stampShift = 10

// stampSlack is how far before New the stamps' origin lies: 2^40 ms, about
// 35 years, which leaves 100 years of 32-bit stamps after it.
const stampSlack = 1 << 40

// shardSlot pads each shard to whole cache lines in the table's array.
type shardSlot = shard.Shard

// Table is a concurrent flow table: one per port. Lookups take no lock;
// inserts and removals lock one shard. See the package documentation.
type Table[V any] struct {
	seed     uint64 // table hash seed
	shift    uint   // 64 - log2(len(shards)); the shard is hash >> shift
	shards   []shardSlot
	limit    int64
	live     atomic.Int64 // exact: reserved before an insert, released on removal
	now      atomic.Int64 // the coarse clock, ms since the Unix epoch
	baseMs   int64        // time origin of slot stamps
	closed   atomic.Bool
	name     string
	ttl      uatomic.Duration
	expiry   func(*Entry[V]) time.Duration
	clock    func() time.Time
	domain   *reclaim.Domain
	onExpire func(FlowKey, *V)
	unwatch  func()
	errFull  error
	errClose error

	hits, misses, inserts, replaced, removed, full *xsync.Counter
	expired, passes                                atomic.Uint64
	longestHold                                    atomic.Int64 // ns
	lastPass                                       uatomic.Time
	released                                       atomic.Int64
}

// New returns an empty table, or an error that matches ErrInvalidConfig.
// The table registers its expiry pass with its domain, so a Reclaimer on
// that domain expires it; Close unregisters it.
func New[V any](cfg Config[V]) (*Table[V], error) {
	if cfg.Limit <= 0 {
		return nil, &ConfigError{"Limit", fmt.Sprintf("must be > 0, got %d", cfg.Limit)}
	}
	if cfg.TTL < 0 {
		return nil, &ConfigError{"TTL", fmt.Sprintf("must be >= 0, got %v", cfg.TTL)}
	}
	shards := cfg.Shards
	switch {
	case shards < 0 || shards > MaxShards || shards&(shards-1) != 0:
		return nil, &ConfigError{"Shards", fmt.Sprintf("must be 0 or a power of two up to %d, got %d", MaxShards, cfg.Shards)}
	case shards == 0:
		shards = defaultShards(cfg.Limit)
	}
	t := &Table[V]{
		seed:     cfg.Seed,
		shift:    uint(64 - bits.TrailingZeros(uint(shards))),
		shards:   make([]shardSlot, shards),
		limit:    int64(cfg.Limit),
		name:     cfg.Name,
		expiry:   cfg.Expiry,
		clock:    cfg.Clock,
		domain:   cfg.Domain,
		onExpire: cfg.OnExpire,
		hits:     xsync.NewCounter(),
		misses:   xsync.NewCounter(),
		inserts:  xsync.NewCounter(),
		replaced: xsync.NewCounter(),
		removed:  xsync.NewCounter(),
		full:     xsync.NewCounter(),
	}
	if t.seed == 0 {
		t.seed = seed.Random()
	}
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
	t.ttl.Store(ttl)
	now := t.clock().UnixMilli()
	t.now.Store(now)
	// The stamps' origin lies far in the past, so that a clock that
	// steps back after New never goes below it (a stamp saturated at 0
	// would not bound the flow's age, and the pass would skip it).
	t.baseMs = now - stampSlack
	t.errFull = fmt.Errorf("%w: table %q at its limit of %d flows", ErrFull, t.name, t.limit)
	t.errClose = fmt.Errorf("%w: table %q", ErrClosed, t.name)

	// A fixed Seed makes every shard seed reproducible too; otherwise
	// each rebuild draws from crypto/rand.
	seeds := seed.NewSource(cfg.Seed)
	perShard := cfg.Limit / shards
	for i := range t.shards {
		t.shards[i].Init(shard.Config{
			Slots: min(perShard, shard.MinSlots),
			Hash:  t.hashKey,
			Seeds: seeds,
		})
	}
	t.unwatch = reclaim.Watch(t.domain, t, func(t *Table[V]) { t.Expire(t.clock()) })
	return t, nil
}

// defaultShards gives each core several shards, so that writers on
// different cores rarely share a mutex, but no more than leave each shard
// about 256 flows at the limit: a shard's floor is 64 slots, and a small
// table should not be mostly floor.
func defaultShards(limit int) int {
	n := 4 * runtime.GOMAXPROCS(0)
	n = 1 << bits.Len(uint(n-1))
	for n > 1 && limit/n < 256 {
		n /= 2
	}
	return n
}

func (t *Table[V]) hashKey(k *shard.Key) uint64 {
	return xxh3.HashSeed(unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)), t.seed)
}

func (t *Table[V]) hash(k *FlowKey) uint64 {
	return xxh3.HashSeed(k.bytes(), t.seed)
}

func (t *Table[V]) shardOf(h uint64) *shard.Shard {
	return &t.shards[h>>t.shift]
}

func skey(k *FlowKey) *shard.Key { return (*shard.Key)(unsafe.Pointer(k.words())) }

func entryOf[V any](n *shard.Node) *Entry[V] { return (*Entry[V])(unsafe.Pointer(n)) }

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

// Get returns the flow stored under k. It takes no lock, allocates
// nothing, and does not read the clock: it refreshes the flow's last-seen
// time from the table's coarse clock, and only when that has ticked since
// the last refresh, so a flow that every core hits is written once a tick.
func (t *Table[V]) Get(k FlowKey) (*Entry[V], bool) {
	t.mustInit()
	h := t.hash(&k)
	n, st := t.shardOf(h).Lookup(h, skey(&k))
	if n == nil {
		t.misses.Inc()
		return nil, false
	}
	e := entryOf[V](n)
	t.touch(e, st)
	return e, true
}

// touch refreshes a hit entry: its last-seen time and slot stamp once per
// tick, and the sampled hit counters.
func (t *Table[V]) touch(e *Entry[V], st *shard.Stamp) {
	if now := t.now.Load(); e.lastSeen.Load() != now {
		e.lastSeen.Store(now)
		st.Store(t.stamp(now))
	}
	if rand.Uint32()%hitSample == 0 {
		e.hits.Add(hitSample)
		t.hits.Add(hitSample)
	}
}

// Insert stores v under k and returns the new entry. A flow already
// stored under k is replaced (as OPTE's add does): the new entry takes its
// place for every later lookup, and the old one is retired like a removed
// flow (its OnExpire runs after a grace period). At the limit it returns an
// error matching ErrFull and changes nothing.
func (t *Table[V]) Insert(k FlowKey, v V) (*Entry[V], error) {
	t.mustInit()
	h := t.hash(&k)
	s := t.shardOf(h)
	s.Lock()
	if t.closed.Load() {
		s.Unlock()
		return nil, t.errClose
	}
	// A full table refuses a new key before allocating its entry, so a
	// flood of new flows at the limit makes no garbage.
	if t.live.Load() >= t.limit && s.FindLocked(h, skey(&k)) == nil {
		s.Unlock()
		t.full.Inc()
		return nil, t.errFull
	}
	e := t.newEntry(&k, v)
	if old := s.ReplaceLocked(h, &e.node); old != nil {
		// The same key: the new entry takes the old one's slot, and
		// the old one leaves the table like a removed flow. The slot's
		// stamp is the new entry's: the old one's may be later (the
		// clock stepped back since), and a stamp later than the entry's
		// last-seen time would make passes skip it when it expires.
		if _, st := s.Lookup(h, skey(&k)); st != nil {
			st.Store(t.stamp(e.lastSeen.Load()))
		}
		s.Unlock()
		t.replaced.Inc()
		t.retire(entryOf[V](old))
		return e, nil
	}
	if !t.reserve() {
		s.Unlock()
		t.full.Inc()
		return nil, t.errFull
	}
	s.InsertLocked(h, &e.node, t.stamp(e.lastSeen.Load()))
	s.Unlock()
	t.inserts.Inc()
	return e, nil
}

func (t *Table[V]) newEntry(k *FlowKey, v V) *Entry[V] {
	e := &Entry[V]{value: v}
	e.node.SetKey(skey(k))
	e.lastSeen.Store(t.now.Load())
	return e
}

// reserve takes one unit of the limit, or reports the table full. The
// count is exact because every insert reserves before it stores and every
// removal releases after it has removed.
func (t *Table[V]) reserve() bool {
	for {
		n := t.live.Load()
		if n >= t.limit {
			return false
		}
		if t.live.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// GetOrInsert is the miss path of a forwarder: it returns the flow stored
// under k, or inserts make() under k in one locked step. make runs at most
// once, and only when k was missing; it runs with k's shard locked, so it
// must not call the table. The bool is true when this call inserted.
func (t *Table[V]) GetOrInsert(k FlowKey, make func() V) (*Entry[V], bool, error) {
	if e, ok := t.Get(k); ok {
		return e, false, nil
	}
	return t.insertMissing(&k, make)
}

func (t *Table[V]) insertMissing(k *FlowKey, make func() V) (e *Entry[V], inserted bool, err error) {
	h := t.hash(k)
	s := t.shardOf(h)
	s.Lock()
	defer s.Unlock()
	if t.closed.Load() {
		return nil, false, t.errClose
	}
	if n := s.FindLocked(h, skey(k)); n != nil {
		// Another core inserted it between our lookup and the lock.
		return entryOf[V](n), false, nil
	}
	if !t.reserve() {
		t.full.Inc()
		return nil, false, t.errFull
	}
	// If make panics the reservation goes back and the deferred Unlock
	// runs: nothing changed.
	ok := false
	defer func() {
		if !ok {
			t.live.Add(-1)
		}
	}()
	e = t.newEntry(k, make())
	s.InsertLocked(h, &e.node, t.stamp(e.lastSeen.Load()))
	ok = true
	t.inserts.Inc()
	return e, true, nil
}

// Remove removes the flow stored under k and reports whether there was
// one. Its OnExpire runs after a grace period.
func (t *Table[V]) Remove(k FlowKey) bool {
	t.mustInit()
	h := t.hash(&k)
	s := t.shardOf(h)
	s.Lock()
	n := s.RemoveLocked(h, skey(&k))
	s.Unlock()
	if n == nil {
		return false
	}
	// Release the limit only after the flow is gone, so Len never
	// counts fewer flows than are stored.
	t.live.Add(-1)
	t.removed.Inc()
	t.retire(entryOf[V](n))
	return true
}

// retire hands flows that left the table to the domain, whose grace
// period guarantees no registered worker still holds them when OnExpire
// runs.
func (t *Table[V]) retire(es ...*Entry[V]) {
	if t.onExpire == nil || len(es) == 0 {
		return
	}
	// The closure holds the callback and the domain, not t, so a
	// dropped table is not kept alive by its pending callbacks.
	fn, d := t.onExpire, t.domain
	d.Defer(func() { expireCallbacks(d, fn, es) })
}

// expireCallbacks calls fn for each entry, in order. If one call panics,
// the entries after it are deferred again before the panic goes on to the
// domain (which recovers and counts it), so one bad callback costs no
// other flow its callback.
func expireCallbacks[V any](d *reclaim.Domain, fn func(FlowKey, *V), es []*Entry[V]) {
	i := 0
	defer func() {
		if i < len(es) {
			rest := es[i:]
			d.Defer(func() { expireCallbacks(d, fn, rest) })
		}
	}()
	for i < len(es) {
		e := es[i]
		i++
		fn(e.Key(), &e.value)
	}
}

// Len is the number of live flows. It never exceeds Limit.
func (t *Table[V]) Len() int { t.mustInit(); return int(t.live.Load()) }

// Limit is the most live flows the table holds.
func (t *Table[V]) Limit() int { t.mustInit(); return int(t.limit) }

// Name is the table's name from its Config.
func (t *Table[V]) Name() string { t.mustInit(); return t.name }

// SetTTL changes the idle timeout; the next pass uses it. d <= 0 restores
// the default (60 s).
func (t *Table[V]) SetTTL(d time.Duration) {
	t.mustInit()
	if d <= 0 {
		d = DefaultTTL
	}
	t.ttl.Store(d)
}

// TTL is the current idle timeout.
func (t *Table[V]) TTL() time.Duration { t.mustInit(); return t.ttl.Load() }

// Range calls fn for every flow until fn returns false. Each shard is
// read as one consistent snapshot (taken under its writer lock, which no
// lookup takes), and fn runs with no lock held: a flow present for the
// whole walk is reported exactly once, and no flow twice. It does not
// refresh any flow's last-seen time or hits.
func (t *Table[V]) Range(fn func(*Entry[V]) bool) {
	t.mustInit()
	var buf []*shard.Node
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		buf = s.Nodes(buf[:0])
		s.Unlock()
		for _, n := range buf {
			if !fn(entryOf[V](n)) {
				return
			}
		}
	}
}

// Clear removes every flow; each one's OnExpire runs after a grace period.
func (t *Table[V]) Clear() {
	t.mustInit()
	var buf []*shard.Node
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		var released int64
		buf, released = s.ClearLocked(buf[:0])
		t.live.Add(-int64(len(buf)))
		s.Unlock()
		t.released.Add(released)
		t.removed.Add(int64(len(buf)))
		if t.onExpire != nil && len(buf) > 0 {
			es := make([]*Entry[V], len(buf))
			for j, n := range buf {
				es[j] = entryOf[V](n)
			}
			t.retire(es...)
		}
	}
}

// Close clears the table (every flow's OnExpire is deferred to the domain),
// unregisters it from its domain's Reclaimer, and makes later inserts fail
// with ErrClosed. It is idempotent.
func (t *Table[V]) Close() error {
	t.mustInit()
	if t.closed.Swap(true) {
		return nil
	}
	t.unwatch()
	t.Clear()
	return nil
}
