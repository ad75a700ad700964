package reclaim

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cacheLine is the padding unit that keeps a hot word alone on its line.
// 128 rather than 64: x86's adjacent-line prefetcher pulls lines in pairs,
// and several arm64 cores have 128-byte lines; the cost is a few bytes per
// domain and per worker.
const cacheLine = 128

// offline is the seen value of an unregistered reader. It is above every
// epoch, so a grace-period check passes over it without a second flag, and
// the epoch can never reach it (2^64 advances).
const offline = math.MaxUint64

// Synchronize's wait: a few yields first (a worker between two batches
// quiesces within microseconds), then sleeps doubling up to maxSleep, so a
// reader that is slow costs the waiter at most ~1000 wake-ups a second.
// Quiescent never wakes the waiter: that would put a check and a possible
// syscall on every batch of every worker. Variables, not constants, only so
// that a test can prove that Unregister's wake-up, not the timer, ends a
// wait (export_test.go).
var (
	spins    = 64
	minSleep = 20 * time.Microsecond
	maxSleep = time.Millisecond
)

// A Domain is a QSBR epoch domain: the readers registered with it, the
// global epoch they report, and the work deferred until they have all
// passed a quiescent state. See the package documentation for the design.
//
// A Domain must be created with NewDomain (or be Default()); all its
// methods are safe for concurrent use.
type Domain struct {
	_ [cacheLine]byte
	// epoch is the global epoch. Read by every worker on every Quiescent
	// and written at most once per Tick (only when work is pending) and
	// once per Synchronize, so it sits alone on its line and stays shared
	// in every core's cache.
	epoch atomic.Uint64
	_     [cacheLine - 8]byte

	// readers is the copy-on-write snapshot of the registered readers:
	// replaced (never modified) under mu, loaded without it by grace-period
	// checks and Stats.
	readers atomic.Pointer[[]*Reader]

	mu      sync.Mutex
	queue   []deferred    // FIFO; targets never decrease along it (see Defer)
	watches []*watch      // the periodic passes (watch.go)
	wake    chan struct{} // closed and replaced by every Unregister

	// runMu serializes the running of deferred work so that it runs in
	// the order it was deferred even when a Tick and a Synchronize drain at
	// the same time. It is held while deferred functions run; mu never is,
	// so they may call Defer and Stats (which take only mu), but not
	// Synchronize or Tick (which take runMu).
	runMu sync.Mutex

	start   time.Time              // the origin of deferred.at (monotonic)
	clock   func() time.Duration   // test seam (export_test.go); nil: time.Since(start)
	run     atomic.Uint64          // deferred functions called
	pan     atomic.Uint64          // of which panicked, plus panicking passes
	last    atomic.Pointer[string] // the latest panic, formatted
	waiters atomic.Int64           // Synchronize calls waiting for readers
}

// deferred is one Defer call waiting for its grace period.
type deferred struct {
	fn     func()
	target uint64        // due once every reader has seen this epoch
	at     time.Duration // when it was deferred, for DomainStats.LagTime
}

// NewDomain returns an empty domain: no readers, nothing deferred, epoch 0.
func NewDomain() *Domain {
	d := &Domain{start: time.Now(), wake: make(chan struct{})}
	d.readers.Store(new([]*Reader))
	return d
}

var defaultDomain = sync.OnceValue(NewDomain)

// Default returns the package's default domain, created on first use. A
// flowcache Table whose Config.Domain is nil uses it, so one Reclaimer on
// Default() serves every such table.
func Default() *Domain { return defaultDomain() }

// A Reader is one worker goroutine's registration with a Domain. Only the
// goroutine that owns it may call Quiescent; Unregister may be called from
// anywhere.
//
// Its layout is one 128-byte block, allocated in the 128-byte size class:
// the word that its worker writes shares a cache line with nobody else's.
type Reader struct {
	// seen is the latest epoch the worker reported from a quiescent state,
	// or offline. Written by its worker (and by Unregister), read by
	// grace-period checks.
	seen atomic.Uint64
	d    *Domain
	_    [cacheLine - 16]byte
}

// Register adds a reader to d: from now on every grace period waits for it
// to call Quiescent (or Unregister). Register one Reader per worker
// goroutine, at its start; it is not meant for the per-packet path (it
// takes d's mutex and copies the reader list).
func (d *Domain) Register() *Reader {
	r := &Reader{d: d}
	d.mu.Lock()
	// A new reader holds nothing yet, so it starts as having seen the
	// current epoch. Even if an advance slips in between this load and the
	// publication below, work deferred before that advance was unpublished
	// before it, and this worker reads nothing until Register returns.
	r.seen.Store(d.epoch.Load())
	old := *d.readers.Load()
	next := make([]*Reader, len(old), len(old)+1)
	copy(next, old)
	next = append(next, r)
	// Publish the new list; grace checks that loaded the old one do not
	// need this reader (see above).
	d.readers.Store(&next)
	d.mu.Unlock()
	return r
}

// Quiescent reports a quiescent state: the calling worker holds no
// reference obtained before this call. Call it between packet batches.
//
// It costs one load of the domain's read-mostly epoch and one load of the
// reader's own word, and stores only when the epoch has moved since the
// last call, so a worker in an idle domain writes nothing. It never
// allocates, blocks or takes a lock. On an unregistered reader it does
// nothing.
func (r *Reader) Quiescent() {
	// Both loads are sequentially consistent (all of sync/atomic is): every
	// access this worker made before the call is ordered before the report
	// below, and everything retired before the advance to e is visible to
	// what it reads after the call.
	e := r.d.epoch.Load()
	if s := r.seen.Load(); s != e {
		r.report(s, e)
	}
}

// report is Quiescent's rare path, kept out of line so that Quiescent
// inlines into the worker's loop.
func (r *Reader) report(s, e uint64) {
	if s == offline {
		return
	}
	// Release: a grace check that loads e here also sees every access the
	// worker made before it. A compare-and-swap rather than a store, so an
	// Unregister from another goroutine that got in first stays offline.
	r.seen.CompareAndSwap(s, e)
}

// Unregister removes the reader from its domain: grace periods stop
// waiting for it, including a Synchronize already waiting, which it wakes.
// Unregister is idempotent, and after it Quiescent is a no-op. A worker
// that is about to block for long (waiting for packets, say) can
// Unregister and Register again afterwards so it does not hold grace
// periods back.
func (r *Reader) Unregister() {
	// Going offline first, with one atomic swap: a grace check that still
	// has this reader in its snapshot passes over it from now on, and a
	// second Unregister sees offline and returns.
	if r.seen.Swap(offline) == offline {
		return
	}
	d := r.d
	d.mu.Lock()
	old := *d.readers.Load()
	next := make([]*Reader, 0, len(old))
	for _, x := range old {
		if x != r {
			next = append(next, x)
		}
	}
	d.readers.Store(&next)
	close(d.wake) // wake every Synchronize waiting, including on r
	d.wake = make(chan struct{})
	d.mu.Unlock()
}

// Readers is how many readers are registered now. It takes no lock.
func (d *Domain) Readers() int { return len(*d.readers.Load()) }

// Defer arranges for fn to be called once a grace period has passed since
// the call: after every reader registered now has called Quiescent (or
// Unregister) after the advance of the epoch that follows this call. fn
// runs on a later Tick of a Reclaimer of d, or in a later Synchronize,
// never inside Defer, so the caller may hold its own locks. Defer never
// blocks for longer than an append under d's mutex. A nil fn is ignored.
//
// Deferred functions run one at a time, in the order they were deferred,
// never under d's mutex; each runs exactly once. They may call Defer and
// Stats. They must not call Synchronize, a Reclaimer's Tick or Close, for
// those wait for the deferred work in progress, which is their own caller.
// A panic in fn is recovered and counted (DomainStats.Panics, LastPanic).
func (d *Domain) Defer(fn func()) {
	if fn == nil {
		return
	}
	at := d.elapsed()
	d.mu.Lock()
	// Target the epoch after the current one rather than advancing now:
	// advancing on every Defer would make every worker store on every
	// batch while work is being retired; instead the next Tick advances
	// once for all work deferred since the last one. The load is under mu
	// and the epoch never decreases, so targets never decrease along the
	// queue and the due work is always a prefix of it.
	d.queue = append(d.queue, deferred{fn: fn, target: d.epoch.Load() + 1, at: at})
	d.mu.Unlock()
}

// Synchronize waits for a grace period that starts now, then runs the
// deferred work that is due, which includes everything deferred before the
// call. With no reader registered it returns at once (after running that
// work).
//
// It waits for every reader registered at the time of the call to call
// Quiescent or Unregister after the call. A goroutine whose own Reader is
// registered would therefore wait on itself forever, the rule of every QSBR
// library: it calls that Reader's Synchronize instead, or unregisters
// first. (A Quiescent just before the call does not help: it reports the
// epoch before the grace period started.)
func (d *Domain) Synchronize() {
	// Sequentially consistent add: a reader that reports target loaded the
	// epoch after this point, so after everything the caller did before
	// the call (unpublishing what it retires).
	target := d.epoch.Add(1)
	d.wait(*d.readers.Load(), target)
	d.drain(target)
}

// Synchronize is Domain.Synchronize for the goroutine that owns r: the
// call itself counts as r's quiescent state, so r holds no reference from
// before it, and the wait is for the other readers only. This is what
// DPDK's rte_rcu_qsbr_synchronize does with the caller's thread id, and
// what liburcu's synchronize_rcu does by taking the calling thread offline
// for the wait. On an unregistered r it is Domain.Synchronize.
func (r *Reader) Synchronize() {
	d := r.d
	target := d.epoch.Add(1)
	// Report target (or later) for ourselves, after the advance.
	r.Quiescent()
	d.wait(*d.readers.Load(), target)
	d.drain(target)
}

// wait returns once every reader in readers has seen target or gone
// offline. seen only grows, so a reader that has passed is not checked
// again.
func (d *Domain) wait(readers []*Reader, target uint64) {
	i := 0
	passed := func() bool {
		for ; i < len(readers); i++ {
			if readers[i].seen.Load() < target {
				return false
			}
		}
		return true
	}
	if passed() {
		return
	}
	d.waiters.Add(1)
	defer d.waiters.Add(-1)
	for range spins {
		runtime.Gosched()
		if passed() {
			return
		}
	}
	var timer *time.Timer
	for delay := minSleep; ; delay = min(2*delay, maxSleep) {
		// Take the wake channel before checking, so an Unregister between
		// the check and the select is not missed.
		d.mu.Lock()
		wake := d.wake
		d.mu.Unlock()
		if passed() {
			if timer != nil {
				timer.Stop()
			}
			return
		}
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		select {
		case <-wake:
		case <-timer.C:
		}
	}
}

// advance moves the epoch on if some pending work waits for an epoch not
// yet reached. An idle domain's epoch stays put, so its workers never store.
func (d *Domain) advance() {
	d.mu.Lock()
	if n := len(d.queue); n > 0 && d.queue[n-1].target > d.epoch.Load() {
		// Under mu, so one advance covers every Defer before it and two
		// Ticks at once do not advance twice for the same work.
		d.epoch.Add(1)
	}
	d.mu.Unlock()
}

// safeEpoch returns the newest epoch that every registered reader has
// seen: work whose target is at most that is due. With no reader it is the
// current epoch.
func (d *Domain) safeEpoch() uint64 {
	// The epoch first, then the readers: a reader that reports a later
	// epoch meanwhile only makes the answer conservative.
	safe := d.epoch.Load()
	for _, r := range *d.readers.Load() {
		// Acquire: what the worker did before reporting s happens before
		// whatever we run because of it.
		if s := r.seen.Load(); s < safe {
			safe = s
		}
	}
	return safe
}

// TryReclaim is a Reclaimer's tick without the passes, for a writer that
// has retired much since the last tick: it advances the epoch if deferred
// work waits for a later one, then runs the deferred work that is due, and
// returns how many functions it ran. It never waits: not for a reader (work
// that a reader still holds back stays queued for a later call), and not
// for other deferred work — if another goroutine is running deferred work
// (a tick, a Synchronize), it returns 0 at once. So garbage that writers
// retire faster than the Reclaimer's period is bounded by how often they
// call it, not by the period: DPDK's rte_rcu_qsbr defer queue reclaims on
// enqueue past its trigger_reclaim_limit in the same way.
//
// The deferred functions run on the calling goroutine: call it with no
// lock held that one of them might take (a flowcache Table calls it after
// a write has let go of its shards). From inside a deferred function it
// returns 0.
func (d *Domain) TryReclaim() int {
	if !d.runMu.TryLock() {
		return 0
	}
	d.advance()
	return d.drainLocked(0)
}

// drain runs the deferred work whose target is at most max(floor, the safe
// epoch), in order, without waiting for any reader.
func (d *Domain) drain(floor uint64) {
	d.runMu.Lock()
	d.drainLocked(floor)
}

// drainLocked is drain for a caller that holds runMu; it releases it.
func (d *Domain) drainLocked(floor uint64) int {
	defer d.runMu.Unlock()
	safe := max(floor, d.safeEpoch())
	d.mu.Lock()
	n := 0
	for n < len(d.queue) && d.queue[n].target <= safe {
		n++
	}
	if n == 0 {
		d.mu.Unlock()
		return 0
	}
	batch := slices.Clone(d.queue[:n])
	// Clear the taken slots so the queue's array does not keep retired
	// objects reachable through their closures.
	clear(d.queue[:n])
	if n == len(d.queue) {
		d.queue = d.queue[:0]
	} else {
		d.queue = d.queue[n:]
	}
	d.mu.Unlock()

	next := 0
	defer func() {
		// Only a deferred function calling runtime.Goexit (t.FailNow in a
		// test, say) gets here with work left: put the rest back at the
		// front, in order, so it is not lost.
		if next < len(batch) {
			d.mu.Lock()
			d.queue = append(batch[next:], d.queue...)
			d.mu.Unlock()
		}
	}()
	for next < len(batch) {
		fn := batch[next].fn
		next++
		d.call(fn)
	}
	return n
}

// call runs one deferred function, recovering a panic.
func (d *Domain) call(fn func()) {
	defer func() {
		d.run.Add(1)
		if v := recover(); v != nil {
			d.recordPanic("deferred func", v)
		}
	}()
	fn()
}

func (d *Domain) recordPanic(what string, v any) {
	s := fmt.Sprintf("%s: %v", what, v)
	d.last.Store(&s)
	d.pan.Add(1)
}

// tick is one Reclaimer tick: the passes, then one advance, then the work
// that is due. It never waits for a reader.
func (d *Domain) tick() {
	d.runPasses()
	d.advance()
	d.drain(0)
}

func (d *Domain) elapsed() time.Duration {
	if d.clock != nil {
		return d.clock()
	}
	return time.Since(d.start)
}

// DomainStats is a snapshot of a Domain, from Domain.Stats.
type DomainStats struct {
	Readers   int    // registered readers
	Epoch     uint64 // the global epoch
	LagEpochs uint64 // how many epochs the slowest reader is behind the global one
	// LagTime is the age of the oldest pending deferred function: how long
	// the slowest reader (or the absence of ticks) has held reclamation
	// back. Up to one Reclaimer period is normal; 0 when nothing is pending.
	LagTime       time.Duration
	Pending       int    // deferred functions waiting for their grace period
	Run           uint64 // deferred functions called so far (panicked ones included)
	Panics        uint64 // deferred functions and watched passes that panicked
	LastPanic     string // the latest of those panics, formatted; "" if none
	Watched       int    // registered periodic passes (Watch)
	Synchronizing int    // Synchronize calls waiting for a reader right now
}

// Stats returns a snapshot of d. It is safe to call from anywhere,
// including from deferred functions and watched passes. The fields are
// read one by one, so under concurrent activity they need not add up.
func (d *Domain) Stats() DomainStats {
	epoch := d.epoch.Load()
	readers := *d.readers.Load()
	s := DomainStats{
		Readers:       len(readers),
		Epoch:         epoch,
		Run:           d.run.Load(),
		Panics:        d.pan.Load(),
		Synchronizing: int(d.waiters.Load()),
	}
	for _, r := range readers {
		if seen := r.seen.Load(); seen < epoch {
			s.LagEpochs = max(s.LagEpochs, epoch-seen)
		}
	}
	if p := d.last.Load(); p != nil {
		s.LastPanic = *p
	}
	now := d.elapsed()
	d.mu.Lock()
	s.Pending = len(d.queue)
	if s.Pending > 0 {
		s.LagTime = max(0, now-d.queue[0].at)
	}
	s.Watched = len(d.watches)
	d.mu.Unlock()
	return s
}

// String formats s on one line for logs.
func (s DomainStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "readers=%d epoch=%d lag=%d epochs/%v pending=%d run=%d panics=%d watched=%d",
		s.Readers, s.Epoch, s.LagEpochs, s.LagTime, s.Pending, s.Run, s.Panics, s.Watched)
	if s.Synchronizing > 0 {
		fmt.Fprintf(&b, " synchronizing=%d", s.Synchronizing)
	}
	if s.LastPanic != "" {
		fmt.Fprintf(&b, " last-panic=%q", s.LastPanic)
	}
	return b.String()
}
