package race_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"go.uber.org/goleak"
)

// sval is a stress-test flow's value. The table stores a *sval, so the
// OnRemove callback and the workers share one record per flow, outside
// the table (Value is read-only: the table may copy the pointer, never
// the record): its id identifies the flow (not the key), cb counts its
// callbacks, and the owner's marks say which causes it may leave by.
type sval struct {
	id     uint64
	key    flowcache.FlowKey
	reply  flowcache.FlowKey // a pair's second key, when paired
	paired bool
	pinned bool          // never removed, never expires; assured, so never evicted
	class  int           // the timeout class its owner moves it to (1..5); pinned: 0
	cb     atomic.Int32  // OnRemove calls for this flow
	why    atomic.Uint32 // the cause of the first one
	// Set by the owner before its next Quiescent, so before the
	// callback: removed when its Remove of one of the flow's keys
	// returned true (the flow must leave as Removed), replaceable once
	// its owner has stored another flow under one of its keys (only
	// then may it leave as Replaced).
	removed, replaceable atomic.Bool
	// Set by Config.Evict when it approves the flow (not assured): only
	// then may it leave as Evicted.
	approved atomic.Bool
}

// assured is the state bit of a flow that Evict spares: conntrack's
// early drop evicts only flows that have not seen a reply.
const assured = 1

// stressTimeouts are the timeout classes 1..5 of the stress tables; class
// 0 (TTL) is 1000 h, so that a flow not yet moved to its class, and every
// pinned flow, never expires.
var stressTimeouts = []time.Duration{1 * time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, 5 * time.Second}

// stressConfig shapes one stress run.
type stressConfig struct {
	workers   int  // goroutines doing random operations, each owning its keys
	perWorker int  // keys each worker owns (each with a reply key for pairs)
	pinned    int  // flows inserted up front that never leave (0 with clear)
	limit     int  // Table Limit; below workers*perWorker+pinned so the limit is met
	shards    int  // Table Shards
	clear     bool // a goroutine calls Clear now and then
	evict     bool // Config.Evict evicts flows that are not assured
	ops       int64
}

// stressRun is the shared state of one run.
type stressRun struct {
	cfg       stressConfig
	tb        *flowcache.Table[*sval]
	dom       *reclaim.Domain
	clock     *fakeClock
	fail      failures
	nextID    atomic.Uint64
	stored    atomic.Int64 // flows that went into the table
	callbacks atomic.Int64 // OnRemove calls
	causes    [flowcache.Cleared + 1]atomic.Int64
	closing   atomic.Bool // set just before Close: pinned flows may leave now
	fill      atomic.Bool // phase: workers insert (true) or mostly look up (false)
	ops       []atomic.Int64
	vanished  atomic.Int64 // a worker's key found gone: expired, evicted or cleared
	full      atomic.Int64
	pairs     atomic.Int64 // pairs stored
	overLimit atomic.Int64 // times the Len monitor saw Len() > Limit
	maxLen    atomic.Int64 // the largest Len() it saw over Limit
	pinnedVal []*sval
}

// TestStress: workers hammer one table with every operation while a
// Reclaimer expires flows on a fake clock that advances, inserts grow
// shards and expiry passes shrink and compact them, and every worker is a
// registered reader that quiesces between batches. Each key (and its
// reply key, for pairs) is owned by one worker, so that worker's log of
// operations on it is sequential: the worker replays it into a model as
// it goes and checks every result against it (a lookup of either key of
// a flow the model holds finds that very flow, or the flow left by a
// cause its owner did not choose: expiry, eviction, Clear; a key the
// model does not hold is never found). Pinned keys, which no one removes
// and whose TTL never runs out, must be found by every lookup.
//
// It also checks that Len never exceeds Limit; that a flow a worker holds
// never has its callback run before the worker quiesces (grace periods);
// that every flow, a pair included, gets exactly one OnRemove once it
// leaves, with a cause that fits (Removed exactly when its owner removed
// it, Replaced only once its owner stored another flow under one of its
// keys, Expired only once it was in a class that expires, Evicted only
// when not assured, Cleared only by Clear or Close; pinned flows only at
// Close); that Stats counts each cause exactly as the callbacks do, and
// Live = Inserts − every cause; and that the final contents equal the
// models.
func TestStress(t *testing.T) {
	runStress(t, stressConfig{workers: 8, perWorker: 640, pinned: 256, limit: 4096, shards: 8, ops: 250_000})
}

// TestStressClear is TestStress with Clear called now and then from
// another goroutine (so there are no pinned keys: Clear drops them too).
func TestStressClear(t *testing.T) {
	runStress(t, stressConfig{workers: 6, perWorker: 400, limit: 2048, shards: 4, clear: true, ops: 150_000})
}

// TestStressEvict is TestStress on a table with Config.Evict (early drop:
// flows not assured may go), run at its limit: inserts at the limit evict
// other workers' flows, which must leave with cause Evicted, never an
// assured or pinned one.
func TestStressEvict(t *testing.T) {
	runStress(t, stressConfig{workers: 6, perWorker: 640, pinned: 256, limit: 2048, shards: 4, evict: true, ops: 300_000})
}

func runStress(t *testing.T, cfg stressConfig) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := &stressRun{cfg: cfg, dom: reclaim.NewDomain(), clock: newFakeClock(), ops: make([]atomic.Int64, cfg.workers)}
	fc := flowcache.Config[*sval]{
		Name:     "stress",
		Limit:    cfg.limit,
		Shards:   cfg.shards,
		TTL:      1000 * time.Hour,
		Timeouts: stressTimeouts,
		Clock:    r.clock.Now,
		Domain:   r.dom,
		OnRemove: r.onRemove,
		// A new flow starts in its class (pinned flows: 0, which never
		// expires); opReclass moves flows on with SetClass.
		Class: func(v **sval) int { return (*v).class },
	}
	if cfg.evict {
		fc.Evict = func(e *flowcache.Entry[*sval]) bool {
			if e.State()&assured != 0 {
				return false
			}
			(*e.Value()).approved.Store(true)
			return true
		}
	}
	tb, err := flowcache.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	r.tb = tb
	for i := range cfg.pinned {
		k := key(1<<30 + uint32(i))
		v := &sval{id: r.nextID.Add(1), key: k, pinned: true}
		var e *flowcache.Entry[*sval]
		if i%4 == 0 { // some pinned flows are pairs
			v.reply, v.paired = k.Reverse(), true
			e, err = tb.InsertPair(k, v.reply, v)
		} else {
			e, err = tb.Insert(k, v)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !e.CompareAndSwapState(0, assured) {
			t.Fatalf("pinned flow %d: state %d, want 0", v.id, e.State())
		}
		r.stored.Add(1)
		r.pinnedVal = append(r.pinnedVal, v)
	}
	r.fill.Store(true)

	// The Reclaimer runs the table's pass with the fake clock; another
	// goroutine moves that clock on and flips the fill/drain phase, so
	// shards grow in fill phases and drain (and shrink) in the others.
	rec := reclaim.NewReclaimer(r.dom, 2*time.Millisecond)
	rec.Start()
	stop := make(chan struct{})
	var phases, drains atomic.Int64
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		// pressure counts inserts that met the limit: refused, or
		// (with Evict) served by an eviction.
		pressure := func() int64 { return r.full.Load() + int64(tb.Stats().Evicted) }
		phase, last := 0, int64(0)
		lastClear := int64(0)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// Phases follow the table, not the wall clock, so that they
			// work at any speed (-race is several times slower): a fill
			// phase, with the clock all but stopped, lasts until inserts
			// have met the limit 100 times (or 2000 ticks); a drain phase
			// moves the clock 40 ms a tick until the unpinned flows have
			// expired (longest timeout 5 s: 125 ticks).
			if r.fill.Load() {
				if p := pressure(); p > last+100 || n-phase > 2000 {
					r.fill.Store(false)
					phase, last = n, p
					phases.Add(1)
				}
				r.clock.Advance(time.Millisecond)
			} else {
				if tb.Len() <= cfg.pinned+cfg.limit/50 || n-phase > 2000 {
					drains.Add(1)
					r.fill.Store(true)
					phase, last = n, pressure()
				}
				r.clock.Advance(40 * time.Millisecond)
			}
			// By the workers' progress, not by ticks or the wall clock,
			// which run at other paces under load and -race: often
			// enough that a run clears several times, rarely enough
			// that the table fills and drains between clears.
			if ops := r.totalOps(); cfg.clear && ops-lastClear >= 20_000 {
				tb.Clear()
				lastClear = ops
			}
		}
	}()
	go func() { // Len never exceeds Limit, checked as it runs.
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch n := tb.Len(); {
			case n < 0:
				r.fail.add("Len() = %d", n)
			case n > cfg.limit:
				// Reported at the end, without stopping the run, so that
				// this one failure does not hide what else the run would
				// find.
				r.overLimit.Add(1)
				for m := r.maxLen.Load(); int64(n) > m && !r.maxLen.CompareAndSwap(m, int64(n)); m = r.maxLen.Load() {
				}
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()

	models := make([][]*sval, cfg.workers)
	var wg sync.WaitGroup
	for w := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			models[w] = r.worker(w, stop)
		}()
	}

	b := stressBudget(cfg.ops, 8*time.Second, 4*time.Second)
	start := time.Now()
	// The op budget, and at least one whole fill and drain (so that
	// flows expired and shards shrank), unless the time cap comes first.
	for (!b.done(start, r.totalOps()) || drains.Load() == 0 && time.Since(start) < b.maxDur) && r.fail.count() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	bg.Wait()
	rec.Close()
	elapsed := time.Since(start)
	r.drain(t)

	// The final contents equal the models: each worker's key holds the
	// flow its model says, unless that flow left by a cause its owner did
	// not choose (expired, evicted, cleared) after the worker's last
	// operation on it, in which case its callback has run by now.
	rows := tb.Dump()
	got := make(map[flowcache.FlowKey]*sval, len(rows))
	for i := range rows {
		v := rows[i].Value
		if _, dup := got[rows[i].Key]; dup {
			t.Errorf("Dump lists %v twice", rows[i].Key)
		}
		got[rows[i].Key] = v
		if rows[i].Paired != v.paired || v.paired && rows[i].Reply != v.reply {
			t.Errorf("Dump row %v: reply %v (paired %v), flow %d has reply %v (paired %v)", rows[i].Key, rows[i].Reply, rows[i].Paired, v.id, v.reply, v.paired)
		}
	}
	if len(rows) != tb.Len() {
		t.Errorf("Dump has %d rows, Len() = %d", len(rows), tb.Len())
	}
	want := 0
	for _, v := range r.pinnedVal {
		if got[v.key] != v {
			t.Errorf("pinned %v: Dump has %v, want flow %d", v.key, got[v.key], v.id)
		}
		want++
	}
	late := 0
	for w, m := range models {
		for i, cur := range m {
			k := ownedKey(w, i)
			g, ok := got[k]
			switch {
			case cur == nil && ok:
				t.Errorf("worker %d key %v: model absent, table holds flow %d", w, k, g.id)
			case cur != nil && !ok && cur.cb.Load() != 1:
				t.Errorf("worker %d key %v: model holds flow %d, table has nothing and no callback ran", w, k, cur.id)
			case cur != nil && !ok:
				late++
			case cur != nil && g != cur:
				t.Errorf("worker %d key %v: model holds flow %d, table %d", w, k, cur.id, g.id)
			case cur != nil:
				want++
			}
		}
	}
	if len(got) != want {
		t.Errorf("table holds %d flows, models account for %d", len(got), want)
	}
	st := tb.Stats()
	r.checkStats(t, "before Close", st)

	r.closing.Store(true)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	r.drain(t)
	if n := tb.Len(); n != 0 {
		t.Errorf("Len() after Close = %d", n)
	}
	r.checkStats(t, "after Close", tb.Stats())
	// No flow got two callbacks (checked in OnRemove), and as many
	// callbacks ran as flows were stored: every one got exactly one.
	if s, c := r.stored.Load(), r.callbacks.Load(); s != c {
		t.Errorf("%d flows stored, %d OnRemove callbacks", s, c)
	}
	r.fail.report(t)
	if n := r.overLimit.Load(); n > 0 {
		t.Errorf("Len() passed Limit %d %d times, up to %d (a replace or eviction racing an insert? see TestLimitExactUnderReplaceAndEvict)",
			cfg.limit, n, r.maxLen.Load())
	}
	ops := r.totalOps()
	t.Logf("%d ops in %v (%.0f ops/s, race=%v), %d workers; stored %d (%d pairs), callbacks %d, vanished under a worker %d (%d after its last op), full %d",
		ops, elapsed.Round(time.Millisecond), float64(ops)/elapsed.Seconds(), raceEnabled, cfg.workers, r.stored.Load(), r.pairs.Load(), r.callbacks.Load(), r.vanished.Load(), late, r.full.Load())
	t.Logf("fill/drain phases: %d (%d drains done); stats: %v", phases.Load(), drains.Load(), st)
	t.Logf("domain: %v", r.dom.Stats())
	if !b.long && ops < cfg.ops {
		t.Logf("note: %d of %d ops within the %v cap", ops, cfg.ops, b.maxDur)
	}
	switch {
	case st.Grows == 0 || st.Moved == 0 || st.Replaced == 0 || st.Removed == 0 || r.pairs.Load() == 0:
		t.Errorf("the run did not exercise rebuilds, moves, replacements, removals and pairs: %v", st)
	case !cfg.clear && (st.Shrinks == 0 || st.Expired == 0) && drains.Load() == 0 && !b.long:
		// Shrinks come with a drain phase, which a machine too slow for
		// the cap does not reach: logged, since a test must not fail
		// because the machine was slow.
		t.Logf("no drain within the %v cap, so no expiry and shrink to check: %v", b.maxDur, st)
	case !cfg.clear && (st.Shrinks == 0 || st.Expired == 0):
		t.Errorf("the run did not exercise expiry and shrinks: %v", st)
	case cfg.evict && st.Evicted == 0:
		t.Errorf("the run did not evict: %v", st)
	case !cfg.evict && !cfg.clear && st.FullRejections == 0:
		t.Errorf("the run did not meet the limit: %v", st)
	case cfg.clear && st.Cleared == 0:
		t.Errorf("the run did not clear: %v", st)
	}
}

// onRemove is the stress tables' OnRemove: each flow called back once,
// with a cause that fits what happened to it (see TestStress).
func (r *stressRun) onRemove(e *flowcache.Entry[*sval], why flowcache.Cause) {
	s := *e.Value()
	n := s.cb.Add(1)
	if n == 1 {
		s.why.Store(uint32(why))
	} else {
		r.fail.add("flow %d (%v) got OnRemove %d times: first %v, now %v", s.id, s.key, n, flowcache.Cause(s.why.Load()), why)
	}
	if k := e.Key(); s.key != k {
		r.fail.add("OnRemove for flow %d: key %v, want %v", s.id, k, s.key)
	}
	if rk, ok := e.Reply(); ok != s.paired || ok && rk != s.reply {
		r.fail.add("OnRemove for flow %d: reply %v (paired %v), want %v (paired %v)", s.id, rk, ok, s.reply, s.paired)
	}
	if s.pinned && !r.closing.Load() {
		r.fail.add("pinned flow %d (%v) left the table: %v", s.id, s.key, why)
	}
	if s.removed.Load() && why != flowcache.Removed {
		r.fail.add("flow %d (%v): its owner's Remove removed it, OnRemove says %v", s.id, s.key, why)
	}
	switch why {
	case flowcache.Removed:
		if !s.removed.Load() {
			r.fail.add("flow %d (%v) left as Removed, but its owner removed no such flow", s.id, s.key)
		}
	case flowcache.Replaced:
		if !s.replaceable.Load() {
			r.fail.add("flow %d (%v) left as Replaced, but its owner stored nothing under its keys since", s.id, s.key)
		}
	case flowcache.Expired:
		if c := e.Class(); c == 0 {
			r.fail.add("flow %d (%v) expired in class 0, whose timeout (1000 h) the fake clock never reaches", s.id, s.key)
		}
	case flowcache.Evicted:
		// The state now may have the assured bit: its owner may have
		// set it after the eviction, on the entry it still held.
		if !r.cfg.evict || !s.approved.Load() || s.pinned {
			r.fail.add("flow %d (%v) evicted: table evicts %v, Evict approved it %v, pinned %v", s.id, s.key, r.cfg.evict, s.approved.Load(), s.pinned)
		}
	case flowcache.Cleared:
		if !r.cfg.clear && !r.closing.Load() {
			r.fail.add("flow %d (%v) left as Cleared, but no one cleared or closed the table", s.id, s.key)
		}
	default:
		r.fail.add("flow %d (%v): OnRemove with cause %v", s.id, s.key, why)
	}
	if why <= flowcache.Cleared {
		r.causes[why].Add(1)
	}
	r.callbacks.Add(1)
}

// checkStats checks, with every worker stopped and every callback run,
// that Stats counts each cause as the callbacks did and that Live is
// Inserts less every flow that left.
func (r *stressRun) checkStats(t *testing.T, when string, st flowcache.Stats) {
	t.Helper()
	left := st.Removed + st.Replaced + st.Evicted + st.Expired + st.Cleared
	if uint64(st.Live) != st.Inserts-left {
		t.Errorf("%s: Stats: live %d != inserts %d - removed %d - replaced %d - evicted %d - expired %d - cleared %d",
			when, st.Live, st.Inserts, st.Removed, st.Replaced, st.Evicted, st.Expired, st.Cleared)
	}
	if st.Inserts != uint64(r.stored.Load()) {
		t.Errorf("%s: Stats.Inserts %d, the workers stored %d flows", when, st.Inserts, r.stored.Load())
	}
	for _, c := range []struct {
		why  flowcache.Cause
		stat uint64
	}{{flowcache.Removed, st.Removed}, {flowcache.Replaced, st.Replaced}, {flowcache.Evicted, st.Evicted},
		{flowcache.Expired, st.Expired}, {flowcache.Cleared, st.Cleared}} {
		if n := r.causes[c.why].Load(); uint64(n) != c.stat {
			t.Errorf("%s: Stats counts %d flows %v, OnRemove was called %d times with %v", when, c.stat, c.why, n, c.why)
		}
	}
}

// The stress operations, and their weights (per 1000) in the two phases:
// fill phases insert until the table is full; drain phases mostly look
// up, so flows expire and passes shrink and compact the shards.
const (
	opPinned = iota
	opGet
	opGetReply // Get of the reply key: finds the flow only if it is a pair
	opGetOrInsert
	opGetOrInsertPair
	opInsert
	opInsertPair
	opRemove
	opRemoveReply
	opAssure  // mark the flow assured (state bit): Evict spares it
	opReclass // move the flow to another timeout class (1..5) with SetClass
	opMiss
	opRange
	opDump
	nOps
)

var opWeights = [2][nOps]int{
	{opPinned: 580, opGet: 40, opGetReply: 20, opRemove: 30, opRemoveReply: 10, opAssure: 20, opReclass: 10, opMiss: 288, opRange: 1, opDump: 1}, // drain
	{opPinned: 250, opGet: 150, opGetReply: 50, opGetOrInsert: 150, opGetOrInsertPair: 70, opInsert: 120, opInsertPair: 60,
		opRemove: 40, opRemoveReply: 10, opAssure: 30, opReclass: 10, opMiss: 58, opRange: 1, opDump: 1}, // fill
}

func pickOp(rng *rand.Rand, fill bool) int {
	w := &opWeights[0]
	if fill {
		w = &opWeights[1]
	}
	x := rng.IntN(1000)
	for op, n := range w {
		if x < n {
			return op
		}
		x -= n
	}
	return opMiss
}

// ownedKey is worker w's i-th key, and ownedReply its reply key when the
// worker stores a pair under it: no one else uses either.
func ownedKey(w, i int) flowcache.FlowKey   { return key(uint32(w)<<20 | uint32(i)) }
func ownedReply(w, i int) flowcache.FlowKey { return key(uint32(w)<<20 | 1<<19 | uint32(i)) }

func (r *stressRun) totalOps() int64 {
	var n int64
	for i := range r.ops {
		n += r.ops[i].Load()
	}
	return n
}

// drain runs the domain's deferred work until none is left.
func (r *stressRun) drain(t *testing.T) {
	t.Helper()
	for i := 0; r.dom.Stats().Pending > 0; i++ {
		if i == 100 {
			t.Fatalf("deferred work still pending: %v", r.dom.Stats())
		}
		r.dom.Synchronize()
	}
}

func (r *stressRun) newVal(w, i int, pair bool, rng *rand.Rand) *sval {
	// Classes 1–5 time out after 1–5 s of fake time: 25–125 ms of real
	// time at the drain phases' pace, so flows expire in drain phases and
	// live through fill phases when looked up. Config.Class puts a new
	// flow in its class as it is stored.
	v := &sval{id: r.nextID.Add(1), key: ownedKey(w, i), class: 1 + rng.IntN(len(stressTimeouts))}
	if pair {
		v.reply, v.paired = ownedReply(w, i), true
	}
	return v
}

// worker runs random operations until stop and returns its model: the
// flow it believes each of its keys holds (nil: absent).
func (r *stressRun) worker(w int, stop <-chan struct{}) []*sval {
	tb := r.tb
	rng := rand.New(rand.NewPCG(uint64(w), 0x5eed))
	rd := r.dom.Register()
	defer rd.Unregister()
	model := make([]*sval, r.cfg.perWorker)
	var held []*sval // flows seen since the last Quiescent
	check := func(where string, e *flowcache.Entry[*sval], k flowcache.FlowKey) *sval {
		v := *e.Value()
		if e.Key() != v.key || k != v.key && !(v.paired && k == v.reply) {
			r.fail.add("%s(%v) returned a flow keyed %v (value keys %v, %v)", where, k, e.Key(), v.key, v.reply)
		}
		if rk, ok := e.Reply(); ok != v.paired || ok && rk != v.reply {
			r.fail.add("%s(%v): flow %d has reply %v (paired %v), want %v (paired %v)", where, k, v.id, rk, ok, v.reply, v.paired)
		}
		held = append(held, v)
		return v
	}
	gone := func(i int) { // model held model[i]; the table says it is gone
		if model[i] != nil {
			r.vanished.Add(1)
			model[i] = nil
		}
	}
	// leaving marks the flow the model holds for i as one that a store
	// under its keys may replace.
	leaving := func(i int) {
		if model[i] != nil {
			model[i].replaceable.Store(true)
		}
	}
	// stored records a flow this worker just stored.
	stored := func(i int, v *sval) {
		r.stored.Add(1)
		if v.paired {
			r.pairs.Add(1)
		}
		model[i] = v
	}
	var n int64
	for {
		if n&31 == 0 {
			// Grace periods: no flow this worker saw since its last
			// quiescent point may have had its callback run.
			for _, v := range held {
				if v.cb.Load() != 0 {
					r.fail.add("worker %d: flow %d (%v) got its callback (%v) while held", w, v.id, v.key, flowcache.Cause(v.why.Load()))
				}
			}
			held = held[:0]
			rd.Quiescent()
			r.ops[w].Store(n)
			select {
			case <-stop:
				return model
			default:
			}
		}
		n++
		i := rng.IntN(r.cfg.perWorker)
		k, rk := ownedKey(w, i), ownedReply(w, i)
		op := pickOp(rng, r.fill.Load())
		if op == opPinned && len(r.pinnedVal) == 0 {
			op = opGet
		}
		switch op {
		case opPinned:
			p := r.pinnedVal[rng.IntN(len(r.pinnedVal))]
			pk := p.key
			if p.paired && rng.IntN(2) == 0 {
				pk = p.reply
			}
			e, ok := tb.Get(pk)
			if !ok {
				r.fail.add("worker %d: pinned key %v (flow %d) missed", w, pk, p.id)
				continue
			}
			if v := check("Get", e, pk); v != p {
				r.fail.add("worker %d: pinned key %v: flow %d, want %d", w, pk, v.id, p.id)
			}
		case opGet, opGetReply:
			gk := k
			if op == opGetReply {
				gk = rk
			}
			e, ok := tb.Get(gk)
			m := model[i]
			switch {
			case ok && (m == nil || op == opGetReply && !m.paired):
				r.fail.add("worker %d: Get(%v) found flow %d of a key its model says is absent", w, gk, (*e.Value()).id)
			case ok:
				if v := check("Get", e, gk); v != m {
					r.fail.add("worker %d: Get(%v) = flow %d, model %d", w, gk, v.id, m.id)
				}
			case op == opGet || m != nil && m.paired:
				gone(i)
			}
		case opGetOrInsert, opGetOrInsertPair:
			pair := op == opGetOrInsertPair
			var made *sval
			mk := func() *sval { made = r.newVal(w, i, pair, rng); return made }
			var e *flowcache.Entry[*sval]
			var inserted bool
			var err error
			if pair {
				e, inserted, err = tb.GetOrInsertPair(k, rk, mk)
			} else {
				e, inserted, err = tb.GetOrInsert(k, mk)
			}
			switch {
			case errors.Is(err, flowcache.ErrFull):
				r.full.Add(1)
				gone(i)
				if made != nil {
					r.fail.add("worker %d: GetOrInsert(%v) ran make and failed", w, k)
				}
			case err != nil:
				r.fail.add("worker %d: GetOrInsert(%v): %v", w, k, err)
			case inserted:
				gone(i)
				if v := check("GetOrInsert", e, k); made == nil || v != made {
					r.fail.add("worker %d: GetOrInsert(%v) inserted flow %d, not what make returned", w, k, v.id)
				}
				stored(i, made)
			default:
				if made != nil {
					r.fail.add("worker %d: GetOrInsert(%v) ran make but did not insert", w, k)
				}
				v := check("GetOrInsert", e, k)
				if model[i] == nil {
					r.fail.add("worker %d: GetOrInsert(%v) found flow %d of a key its model says is absent", w, k, v.id)
				} else if v != model[i] {
					r.fail.add("worker %d: GetOrInsert(%v) = flow %d, model %d", w, k, v.id, model[i].id)
				}
			}
		case opInsert, opInsertPair:
			pair := op == opInsertPair
			v := r.newVal(w, i, pair, rng)
			leaving(i)
			var e *flowcache.Entry[*sval]
			var err error
			if pair {
				e, err = tb.InsertPair(k, rk, v)
			} else {
				e, err = tb.Insert(k, v)
			}
			switch {
			case errors.Is(err, flowcache.ErrFull):
				// A replace never fails, so the keys were absent.
				r.full.Add(1)
				gone(i)
			case err != nil:
				r.fail.add("worker %d: Insert(%v): %v", w, k, err)
			default:
				if check("Insert", e, k) != v {
					r.fail.add("worker %d: Insert(%v) returned another flow", w, k)
				}
				stored(i, v)
			}
		case opRemove, opRemoveReply:
			gk := k
			if op == opRemoveReply {
				gk = rk
			}
			m := model[i]
			if tb.Remove(gk) {
				if m == nil || op == opRemoveReply && !m.paired {
					r.fail.add("worker %d: Remove(%v) removed a key its model says is absent", w, gk)
				} else {
					m.removed.Store(true)
				}
				model[i] = nil
				// The pair's other key went with it.
				other := rk
				if op == opRemoveReply {
					other = k
				}
				if e, ok := tb.Get(other); ok {
					r.fail.add("worker %d: Remove(%v) left the flow's other key %v (flow %d)", w, gk, other, (*e.Value()).id)
				}
			} else if op == opRemove || m != nil && m.paired {
				gone(i)
			}
		case opAssure:
			e, ok := tb.Get(k)
			if !ok {
				gone(i)
				continue
			}
			check("Get", e, k)
			if s := e.State(); s&assured == 0 && !e.CompareAndSwapState(s, s|assured) {
				// Only the owner swaps the state of its flows.
				r.fail.add("worker %d: CompareAndSwapState(%d) on its own flow %v failed (state now %d)", w, s, k, e.State())
			}
		case opReclass:
			e, ok := tb.Get(k)
			if !ok {
				gone(i)
				continue
			}
			check("Get", e, k)
			c := 1 + rng.IntN(len(stressTimeouts))
			// False only when the flow left meanwhile (expired, evicted,
			// cleared): then it is gone.
			if tb.SetClass(e, c) {
				if got := e.Class(); got != c && model[i] == *e.Value() {
					r.fail.add("worker %d: SetClass(%v, %d) returned true, Class() = %d", w, k, c, got)
				}
			}
		case opMiss:
			// Get of a key no one ever inserts.
			if e, ok := tb.Get(key(1<<31 | uint32(rng.IntN(1<<20)))); ok {
				r.fail.add("worker %d: Get of a never-inserted key found %v", w, e.Key())
			}
		case opRange:
			seen := make(map[flowcache.FlowKey]bool)
			for e := range tb.All() {
				if seen[e.Key()] {
					r.fail.add("worker %d: All reported %v twice", w, e.Key())
				}
				seen[e.Key()] = true
				held = append(held, *e.Value())
			}
			for _, p := range r.pinnedVal {
				if !seen[p.key] {
					r.fail.add("worker %d: All missed pinned %v", w, p.key)
				}
			}
		case opDump:
			rows := tb.Dump()
			pinned := 0
			for j := range rows {
				if j > 0 && rows[j-1].Key.Compare(rows[j].Key) >= 0 {
					r.fail.add("worker %d: Dump not sorted or repeats at row %d: %v, %v", w, j, rows[j-1].Key, rows[j].Key)
				}
				if rows[j].Value.pinned {
					pinned++
				}
			}
			if pinned != len(r.pinnedVal) {
				r.fail.add("worker %d: Dump lists %d pinned flows, want %d", w, pinned, len(r.pinnedVal))
			}
		}
	}
}
