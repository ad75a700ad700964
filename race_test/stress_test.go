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
// OnRemove callback and the workers share one record per entry: its id
// identifies the entry (not the key), and cb counts its callbacks.
type sval struct {
	id     uint64
	key    flowcache.FlowKey
	pinned bool          // never removed; must be found by every lookup
	ttl    time.Duration // what Config.Expiry returns for it
	cb     atomic.Int32  // OnRemove calls for this entry
}

// stressConfig shapes one stress run.
type stressConfig struct {
	workers   int  // goroutines doing random operations, each owning its keys
	perWorker int  // keys each worker owns
	pinned    int  // keys inserted up front that never leave (0 with clear)
	limit     int  // Table Limit; below workers*perWorker+pinned so ErrFull happens
	shards    int  // Table Shards
	clear     bool // a goroutine calls Clear now and then
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
	stored    atomic.Int64 // entries that went into the table
	callbacks atomic.Int64 // OnRemove calls
	closing   atomic.Bool  // set just before Close: pinned flows may leave now
	fill      atomic.Bool  // phase: workers insert (true) or mostly look up (false)
	ops       []atomic.Int64
	vanished  atomic.Int64 // a worker's key found gone: expired or cleared
	full      atomic.Int64
	pinnedVal []*sval
}

// TestStress: workers hammer one table with every operation while a
// Reclaimer expires flows on a fake clock that advances, inserts grow
// shards and expiry passes shrink them, and every worker is a registered
// reader that quiesces between batches. Each key is owned by one worker,
// so that worker's log of operations on it is sequential: the worker
// replays it into a model as it goes and checks every result against it
// (a lookup of a key the model holds finds that very entry, or the entry
// expired; a key the model does not hold is never found). Pinned keys,
// which no one removes and whose TTL never runs out, must be found by
// every lookup. It also checks that Len never exceeds Limit, that an entry
// a worker holds never has its callback run before the worker quiesces
// (grace periods), that every entry gets exactly one OnRemove once it
// leaves, and that the final contents equal the models.
func TestStress(t *testing.T) {
	runStress(t, stressConfig{workers: 8, perWorker: 640, pinned: 256, limit: 4096, shards: 8, ops: 1_600_000})
}

// TestStressClear is TestStress with Clear called now and then from
// another goroutine (so there are no pinned keys: Clear drops them too).
func TestStressClear(t *testing.T) {
	runStress(t, stressConfig{workers: 6, perWorker: 400, limit: 2048, shards: 4, clear: true, ops: 400_000})
}

func runStress(t *testing.T, cfg stressConfig) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := &stressRun{cfg: cfg, dom: reclaim.NewDomain(), clock: newFakeClock(), ops: make([]atomic.Int64, cfg.workers)}
	tb, err := flowcache.New(flowcache.Config[*sval]{
		Name:   "stress",
		Limit:  cfg.limit,
		Shards: cfg.shards,
		Clock:  r.clock.Now,
		Domain: r.dom,
		Expiry: func(e *flowcache.Entry[*sval]) time.Duration { return (*e.Value()).ttl },
		OnRemove: func(e *flowcache.Entry[sval], _ flowcache.Cause) {
			k := e.Key()
			v := e.Value()
			s := *v
			if n := s.cb.Add(1); n != 1 {
				r.fail.add("entry %d (%v) got OnRemove %d times", s.id, s.key, n)
			}
			if s.key != k {
				r.fail.add("OnRemove for entry %d: key %v, want %v", s.id, k, s.key)
			}
			if s.pinned && !r.closing.Load() {
				r.fail.add("pinned entry %d (%v) left the table", s.id, s.key)
			}
			r.callbacks.Add(1)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.tb = tb
	for i := range cfg.pinned {
		k := key(1<<30 + uint32(i))
		v := &sval{id: r.nextID.Add(1), key: k, pinned: true, ttl: 1000 * time.Hour}
		if _, err := tb.Insert(k, v); err != nil {
			t.Fatal(err)
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
	var phases atomic.Int64
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		phase, lastFull := 0, int64(0)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// Phases follow the table, not the wall clock, so that they
			// work at any speed (-race is several times slower): a fill
			// phase, with the clock all but stopped, lasts until inserts
			// have failed 100 times at the limit (or 2000 ticks); a
			// drain phase moves the clock 40 ms a tick until the unpinned
			// flows have expired (max TTL 5 s: 125 ticks).
			if r.fill.Load() {
				if full := r.full.Load(); full > lastFull+100 || n-phase > 2000 {
					r.fill.Store(false)
					phase, lastFull = n, full
					phases.Add(1)
				}
				r.clock.Advance(time.Millisecond)
			} else {
				if tb.Len() <= cfg.pinned+cfg.limit/50 || n-phase > 2000 {
					r.fill.Store(true)
					phase, lastFull = n, r.full.Load()
				}
				r.clock.Advance(40 * time.Millisecond)
			}
			if cfg.clear && n%97 == 96 {
				tb.Clear()
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
			if n := tb.Len(); n > cfg.limit || n < 0 {
				r.fail.add("Len() = %d, Limit %d", n, cfg.limit)
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

	b := stressBudget(cfg.ops, 50*time.Second, 20*time.Second)
	start := time.Now()
	for !b.done(start, r.totalOps()) && r.fail.count() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	bg.Wait()
	rec.Close()
	elapsed := time.Since(start)
	r.drain(t)

	// The final contents equal the models: each worker's key holds the
	// entry its model says, unless that entry expired (or was cleared)
	// after the worker's last operation on it, in which case its callback
	// has run by now.
	rows := tb.Dump()
	got := make(map[flowcache.FlowKey]*sval, len(rows))
	for i := range rows {
		if _, dup := got[rows[i].Key]; dup {
			t.Errorf("Dump lists %v twice", rows[i].Key)
		}
		got[rows[i].Key] = rows[i].Value
	}
	if len(rows) != tb.Len() {
		t.Errorf("Dump has %d rows, Len() = %d", len(rows), tb.Len())
	}
	want := 0
	for _, v := range r.pinnedVal {
		if got[v.key] != v {
			t.Errorf("pinned %v: Dump has %v, want entry %d", v.key, got[v.key], v.id)
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
				t.Errorf("worker %d key %v: model absent, table holds entry %d", w, k, g.id)
			case cur != nil && !ok && cur.cb.Load() != 1:
				t.Errorf("worker %d key %v: model holds entry %d, table has nothing and no callback ran", w, k, cur.id)
			case cur != nil && !ok:
				late++
			case cur != nil && g != cur:
				t.Errorf("worker %d key %v: model holds entry %d, table %d", w, k, cur.id, g.id)
			case cur != nil:
				want++
			}
		}
	}
	if len(got) != want {
		t.Errorf("table holds %d flows, models account for %d", len(got), want)
	}
	st := tb.Stats()
	if st.Live != int(st.Inserts)-int(st.Removed)-int(st.Expired) {
		t.Errorf("Stats: live %d != inserts %d - removed %d - expired %d", st.Live, st.Inserts, st.Removed, st.Expired)
	}

	r.closing.Store(true)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	r.drain(t)
	if n := tb.Len(); n != 0 {
		t.Errorf("Len() after Close = %d", n)
	}
	// No entry got two callbacks (checked in OnRemove), and as many
	// callbacks ran as entries were stored: every one got exactly one.
	if s, c := r.stored.Load(), r.callbacks.Load(); s != c {
		t.Errorf("%d entries stored, %d OnRemove callbacks", s, c)
	}
	r.fail.report(t)
	ops := r.totalOps()
	t.Logf("%d ops in %v (%.0f ops/s, race=%v), %d workers; stored %d, callbacks %d, vanished under a worker %d (%d after its last op), full %d",
		ops, elapsed.Round(time.Millisecond), float64(ops)/elapsed.Seconds(), raceEnabled, cfg.workers, r.stored.Load(), r.callbacks.Load(), r.vanished.Load(), late, r.full.Load())
	t.Logf("fill/drain phases: %d; stats: %v", phases.Load(), st)
	t.Logf("domain: %v", r.dom.Stats())
	if !b.long && ops < cfg.ops {
		t.Logf("warning: only %d of %d ops within the %v cap", ops, cfg.ops, b.maxDur)
	}
	if st.Grows == 0 || (!cfg.clear && (st.Shrinks == 0 || st.FullRejections == 0)) {
		t.Errorf("the run did not exercise rebuilds and the limit: grows %d, shrinks %d, full %d", st.Grows, st.Shrinks, st.FullRejections)
	}
}

// The stress operations, and their weights (per 1000) in the two phases:
// fill phases insert until the table is full; drain phases only look up,
// so flows expire and passes shrink the shards.
const (
	opPinned = iota
	opGet
	opGetOrInsert
	opInsert
	opRemove
	opMiss
	opRange
	opDump
	nOps
)

var opWeights = [2][nOps]int{
	{opPinned: 600, opGet: 40, opRemove: 40, opMiss: 318, opRange: 1, opDump: 1},                                    // drain
	{opPinned: 300, opGet: 200, opGetOrInsert: 220, opInsert: 180, opRemove: 50, opMiss: 48, opRange: 1, opDump: 1}, // fill
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

func ownedKey(w, i int) flowcache.FlowKey { return key(uint32(w)<<20 | uint32(i)) }

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

func (r *stressRun) newVal(k flowcache.FlowKey, rng *rand.Rand) *sval {
	// 1–5 s of fake time: 25–125 ms of real time at the clock's pace,
	// so flows expire in drain phases and live through fill phases
	// when looked up.
	return &sval{id: r.nextID.Add(1), key: k, ttl: time.Duration(1000+rng.IntN(4000)) * time.Millisecond}
}

// worker runs random operations until stop and returns its model: the
// entry it believes each of its keys holds (nil: absent).
func (r *stressRun) worker(w int, stop <-chan struct{}) []*sval {
	tb := r.tb
	rng := rand.New(rand.NewPCG(uint64(w), 0x5eed))
	rd := r.dom.Register()
	defer rd.Unregister()
	model := make([]*sval, r.cfg.perWorker)
	var held []*sval // entries seen since the last Quiescent
	check := func(where string, e *flowcache.Entry[*sval], k flowcache.FlowKey) *sval {
		v := *e.Value()
		if e.Key() != k || v.key != k {
			r.fail.add("%s(%v) returned an entry keyed %v (value key %v)", where, k, e.Key(), v.key)
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
	var n int64
	for {
		if n&31 == 0 {
			// Grace periods: no entry this worker saw since its last
			// quiescent point may have had its callback run.
			for _, v := range held {
				if v.cb.Load() != 0 {
					r.fail.add("worker %d: entry %d (%v) got its callback while held", w, v.id, v.key)
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
		k := ownedKey(w, i)
		op := pickOp(rng, r.fill.Load())
		if op == opPinned && len(r.pinnedVal) == 0 {
			op = opGet
		}
		switch op {
		case opPinned:
			p := r.pinnedVal[rng.IntN(len(r.pinnedVal))]
			e, ok := tb.Get(p.key)
			if !ok {
				r.fail.add("worker %d: pinned key %v (entry %d) missed", w, p.key, p.id)
				continue
			}
			if v := check("Get", e, p.key); v != p {
				r.fail.add("worker %d: pinned key %v: entry %d, want %d", w, p.key, v.id, p.id)
			}
		case opGet:
			e, ok := tb.Get(k)
			switch {
			case ok && model[i] == nil:
				r.fail.add("worker %d: Get(%v) found entry %d of a key its model says is absent", w, k, (*e.Value()).id)
			case ok:
				if v := check("Get", e, k); v != model[i] {
					r.fail.add("worker %d: Get(%v) = entry %d, model %d", w, k, v.id, model[i].id)
				}
			default:
				gone(i)
			}
		case opGetOrInsert:
			var made *sval
			e, inserted, err := tb.GetOrInsert(k, func() *sval { made = r.newVal(k, rng); return made })
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
				r.stored.Add(1)
				gone(i)
				if v := check("GetOrInsert", e, k); made == nil || v != made {
					r.fail.add("worker %d: GetOrInsert(%v) inserted entry %d, not what make returned", w, k, v.id)
				}
				model[i] = made
			default:
				if made != nil {
					r.fail.add("worker %d: GetOrInsert(%v) ran make but did not insert", w, k)
				}
				if v := check("GetOrInsert", e, k); model[i] == nil {
					r.fail.add("worker %d: GetOrInsert(%v) found entry %d of a key its model says is absent", w, k, v.id)
				} else if v != model[i] {
					r.fail.add("worker %d: GetOrInsert(%v) = entry %d, model %d", w, k, v.id, model[i].id)
				}
			}
		case opInsert:
			v := r.newVal(k, rng)
			e, err := tb.Insert(k, v)
			switch {
			case errors.Is(err, flowcache.ErrFull):
				// A replace never fails, so the key was absent.
				r.full.Add(1)
				gone(i)
			case err != nil:
				r.fail.add("worker %d: Insert(%v): %v", w, k, err)
			default:
				r.stored.Add(1)
				if check("Insert", e, k) != v {
					r.fail.add("worker %d: Insert(%v) returned another entry", w, k)
				}
				model[i] = v
			}
		case opRemove:
			if tb.Remove(k) {
				if model[i] == nil {
					r.fail.add("worker %d: Remove(%v) removed a key its model says is absent", w, k)
				}
				model[i] = nil
			} else {
				gone(i)
			}
		case opMiss:
			// Get of a key no one ever inserts.
			if e, ok := tb.Get(key(1<<31 | uint32(rng.IntN(1<<20)))); ok {
				r.fail.add("worker %d: Get of a never-inserted key found %v", w, e.Key())
			}
		case opRange:
			seen := make(map[flowcache.FlowKey]bool)
			tb.Range(func(e *flowcache.Entry[*sval]) bool {
				if seen[e.Key()] {
					r.fail.add("worker %d: Range reported %v twice", w, e.Key())
				}
				seen[e.Key()] = true
				return true
			})
			for _, p := range r.pinnedVal {
				if !seen[p.key] {
					r.fail.add("worker %d: Range missed pinned %v", w, p.key)
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
