package race_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"go.uber.org/goleak"
)

// mflow is a moves-test flow's value: pointer-free, as docs/DESIGN.md's
// "Storage" means V to be, and fixed. id names the flow (not its key: a
// key that is stored again gets a new flow), so that the workers' tallies
// and the table's counters can be matched.
type mflow struct{ id, version uint64 }

// tally is what the workers did to one flow: the packets and bytes they
// counted on it, and the swaps of its state word that succeeded.
type tally struct{ packets, bytes, swaps uint64 }

// final is what OnRemove saw of a flow that left.
type final struct {
	packets, bytes uint64
	state          uint32
	why            flowcache.Cause
	calls          int
}

// TestMovesLoseNothing (invariant 13 in docs/DESIGN.md): registered workers count
// packets (Count) and step a per-flow counter in the state word
// (CompareAndSwapState(s, s+1)) on flows they looked up, holding each
// entry across their whole batch, while the main goroutine forces moves
// under them: inserts of filler flows that grow the shards and open new
// chunks, churn that leaves chunks half live (the next chunk's allocation
// and the next pass evacuate them), and expiry passes on a fake clock
// that drop the fillers, so the drained shards are compacted and every
// tracked flow moves. The main goroutine also removes and replaces
// tracked flows, so some leave while workers still hold them.
//
// At the end (every worker stopped, a grace period passed) every flow's
// Packets and Bytes equal exactly what the workers counted on it, and its
// State equals the number of swaps on it that succeeded; a flow that left
// during the run, or at Close, had exactly those values when its OnRemove
// ran (after its grace period, and after the fold of every move before
// it). The tallies are kept per worker, in maps keyed by the flow id in
// V, and summed at the end. The main goroutine also gives tracked flows
// new values (SetValue: the flow is copied to a new record, as a move
// copies it, and keeps its counters and state) and removes some with
// RemoveEntry.
func TestMovesLoseNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		tracked = 768  // keys the workers look up; one in three a pair
		fillers = 2500 // per cycle: past a grow or two, and new chunks
		batch   = 32
	)
	workers := max(2, runtime.GOMAXPROCS(0))
	clock := newFakeClock()
	dom := reclaim.NewDomain()
	var mu sync.Mutex
	finals := map[uint64]*final{}
	tb, err := flowcache.New(flowcache.Config[mflow]{
		Name:     "moves",
		Limit:    1 << 16,
		Shards:   2,
		TTL:      1000 * time.Hour,
		Timeouts: []time.Duration{time.Millisecond}, // class 1: fillers
		Clock:    clock.Now,
		Domain:   dom,
		OnRemove: func(e *flowcache.Entry[mflow], why flowcache.Cause) {
			id := e.Value().id
			if id == 0 {
				return // a filler
			}
			mu.Lock()
			defer mu.Unlock()
			f := finals[id]
			if f == nil {
				f = &final{}
				finals[id] = f
			}
			f.calls++
			f.packets, f.bytes, f.state, f.why = e.Packets(), e.Bytes(), e.State(), why
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	trackedKey := func(i int) flowcache.FlowKey { return key(1<<24 | uint32(i)) }
	replyKey := func(i int) flowcache.FlowKey { return key(1<<24 | 1<<20 | uint32(i)) }
	fillerKey := func(c, i int) flowcache.FlowKey { return key(1<<23 | uint32(c%4)<<16 | uint32(i)) }
	var nextID atomic.Uint64
	var stored []uint64 // every tracked flow id stored, in order
	store := func(i int) error {
		id := nextID.Add(1)
		var err error
		if i%3 == 0 {
			_, err = tb.InsertPair(trackedKey(i), replyKey(i), mflow{id: id})
		} else {
			_, err = tb.Insert(trackedKey(i), mflow{id: id})
		}
		if err == nil {
			stored = append(stored, id)
		}
		return err
	}
	for i := range tracked {
		if err := store(i); err != nil {
			t.Fatal(err)
		}
	}

	var fail failures
	var counted atomic.Int64
	stop := make(chan struct{})
	tallies := make([]map[uint64]*tally, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := dom.Register()
			defer rd.Unregister()
			mine := map[uint64]*tally{}
			tallies[w] = mine
			rng := rand.New(rand.NewPCG(uint64(w), 13))
			keys := make([]flowcache.FlowKey, batch)
			out := make([]*flowcache.Entry[mflow], batch)
			var n int64
			for {
				select {
				case <-stop:
					counted.Add(n)
					return
				default:
				}
				for j := range keys {
					i := rng.IntN(tracked)
					keys[j] = trackedKey(i)
					if i%3 == 0 && rng.IntN(2) == 0 {
						keys[j] = replyKey(i)
					}
				}
				tb.GetBatch(keys, out)
				// Twice over the batch, with a yield between: the
				// entries are held across it, while the main goroutine
				// moves them.
				for pass := range 2 {
					for _, e := range out {
						if e == nil {
							continue
						}
						id := e.Value().id
						tl := mine[id]
						if tl == nil {
							tl = &tally{}
							mine[id] = tl
						}
						size := 64 + rng.IntN(1400)
						e.Count(size)
						tl.packets++
						tl.bytes += uint64(size)
						n++
						if s := e.State(); e.CompareAndSwapState(s, s+1) {
							tl.swaps++
						}
					}
					if pass == 0 {
						runtime.Gosched()
					}
				}
				rd.Quiescent()
			}
		}()
	}

	// The mover: registered, since it holds each filler's entry from
	// Insert to SetClass; its Synchronize runs the folds and callbacks.
	rd := dom.Register()
	b := stressBudget(12, 8*time.Second, 4*time.Second) // at least 12 cycles
	start := time.Now()
	rng := rand.New(rand.NewPCG(99, 1))
	cycles, left, setValues := 0, 0, 0
	for !b.done(start, int64(cycles)) && fail.count() == 0 {
		c := cycles
		cycles++
		// Fill: fillers, with tracked flows replaced or removed and
		// stored again among them, so that those land in chunks the
		// churn below leaves half live.
		for i := range fillers {
			e, err := tb.Insert(fillerKey(c, i), mflow{})
			if err != nil {
				t.Fatalf("filler: %v", err)
			}
			if !tb.SetClass(e, 1) {
				t.Fatalf("SetClass of a filler just stored failed")
			}
			if i%16 == 0 {
				j := rng.IntN(tracked)
				switch rng.IntN(5) {
				case 0: // leaves as Removed; stored again later
					if tb.Remove(trackedKey(j)) {
						left++
					}
				case 1: // a new value: the same flow, copied
					if e, ok := tb.Get(trackedKey(j)); ok {
						v := *e.Value()
						v.version++
						if _, ok := tb.SetValue(e, v); !ok {
							t.Fatalf("SetValue of tracked %d failed", j)
						}
						setValues++
					}
				case 2: // exactly this flow leaves, as Removed
					if e, ok := tb.Get(replyKey(j)); ok && tb.RemoveEntry(e) {
						left++
					}
				default: // the old flow leaves as Replaced, or j was absent
					if err := store(j); err != nil {
						t.Fatalf("store tracked %d: %v", j, err)
					}
				}
			}
			if i%64 == 0 {
				rd.Quiescent()
			}
		}
		// Churn: two fillers in three go, so chunks fall to half live;
		// the inserts after it open new chunks, which evacuates them.
		for i := range fillers {
			if i%3 != 0 {
				tb.Remove(fillerKey(c, i))
			}
		}
		for i := range fillers / 2 {
			if e, err := tb.Insert(fillerKey(c, fillers+i), mflow{}); err == nil {
				tb.SetClass(e, 1)
			}
		}
		for j := range tracked { // absent ones come back
			if _, ok := tb.Get(trackedKey(j)); !ok {
				if err := store(j); err != nil {
					t.Fatalf("store tracked %d: %v", j, err)
				}
			}
		}
		rd.Quiescent()
		// Drain: the fillers expire, the shards are compacted.
		tb.Expire(clock.Advance(time.Second))
		rd.Synchronize()
	}
	close(stop)
	wg.Wait()
	rd.Unregister()
	for i := 0; dom.Stats().Pending > 0; i++ {
		if i == 100 {
			t.Fatalf("deferred work still pending: %v", dom.Stats())
		}
		dom.Synchronize()
	}
	elapsed := time.Since(start)

	want := map[uint64]*tally{}
	for _, m := range tallies {
		for id, tl := range m {
			s := want[id]
			if s == nil {
				s = &tally{}
				want[id] = s
			}
			s.packets += tl.packets
			s.bytes += tl.bytes
			s.swaps += tl.swaps
		}
	}
	of := func(id uint64) tally {
		if s := want[id]; s != nil {
			return *s
		}
		return tally{}
	}
	var bad []string
	mismatch := func(format string, args ...any) {
		if len(bad) < 20 {
			bad = append(bad, fmt.Sprintf(format, args...))
		} else if len(bad) == 20 {
			bad = append(bad, "...")
		}
	}
	// The flows still stored: their counters and state now.
	st := tb.Stats()
	live := map[uint64]bool{}
	var sumTable, sumWant tally
	for e := range tb.All() {
		id := e.Value().id
		if id == 0 {
			continue
		}
		live[id] = true
		w := of(id)
		p, by, s := e.Packets(), e.Bytes(), e.State()
		sumTable.packets += p
		sumWant.packets += w.packets
		if p != w.packets || by != w.bytes || uint64(s) != w.swaps {
			mismatch("live flow %d (%v): Packets %d, Bytes %d, State %d; the workers counted %d packets, %d bytes and made %d swaps",
				id, e.Key(), p, by, s, w.packets, w.bytes, w.swaps)
		}
	}
	// The flows that left during the run: what OnRemove saw.
	mu.Lock()
	for id, f := range finals {
		w := of(id)
		if f.calls != 1 {
			mismatch("flow %d: OnRemove ran %d times", id, f.calls)
		}
		if live[id] {
			mismatch("flow %d: OnRemove ran (%v) while it is still stored", id, f.why)
		}
		if f.packets != w.packets || f.bytes != w.bytes || uint64(f.state) != w.swaps {
			mismatch("flow %d left (%v): OnRemove saw Packets %d, Bytes %d, State %d; the workers counted %d packets, %d bytes and made %d swaps",
				id, f.why, f.packets, f.bytes, f.state, w.packets, w.bytes, w.swaps)
		}
		sumTable.packets += f.packets
		sumWant.packets += w.packets
	}
	leftDuring := len(finals)
	for _, id := range stored {
		if !live[id] && finals[id] == nil {
			mismatch("flow %d is neither stored nor called back", id)
		}
	}
	mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("moves lost or duplicated counts or swaps (table %d packets in all, workers %d):\n%s",
			sumTable.packets, sumWant.packets, joinLines(bad))
	}

	// Close: every flow still stored leaves as Cleared, and OnRemove sees
	// the same final values.
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	dom.Synchronize()
	bad = bad[:0]
	mu.Lock()
	for id := range live {
		w, f := of(id), finals[id]
		switch {
		case f == nil:
			mismatch("flow %d: no OnRemove at Close", id)
		case f.calls != 1 || f.why != flowcache.Cleared:
			mismatch("flow %d: %d OnRemove calls, last %v; want one, Cleared", id, f.calls, f.why)
		case f.packets != w.packets || f.bytes != w.bytes || uint64(f.state) != w.swaps:
			mismatch("flow %d cleared: OnRemove saw Packets %d, Bytes %d, State %d; the workers counted %d packets, %d bytes and made %d swaps",
				id, f.packets, f.bytes, f.state, w.packets, w.bytes, w.swaps)
		}
	}
	if n := len(finals); n != len(stored) {
		mismatch("%d tracked flows stored, %d called back", len(stored), n)
	}
	mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("at Close:\n%s", joinLines(bad))
	}
	fail.report(t)
	t.Logf("%d cycles in %v: %d packets counted by %d workers on %d flows (%d left during the run, %d removed by the mover, %d new values); stats: %v",
		cycles, elapsed.Round(time.Millisecond), counted.Load(), workers, len(stored), leftDuring, left, setValues, st)
	if st.Compactions == 0 || st.Moved == 0 || st.Shrinks == 0 || setValues == 0 {
		t.Errorf("no moves or no new values under the workers: %v, %d SetValue", st, setValues)
	}
}

func joinLines(lines []string) string { return "\t" + strings.Join(lines, "\n\t") }
