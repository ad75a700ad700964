package race_test

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// wval is a walk-test flow's value: bursts go to class 1 (1 ms, by
// Config.Class) and expire at the next pass; every other flow is in class
// 0 (1000 h).
type wval struct{ burst bool }

// TestWalkUnderWrites: Range, All (range-over-func) and Dump run while
// writers insert and remove keys, one-key flows and pairs, and a third
// goroutine forces rebuilds both ways and moves (a burst of inserts grows
// the shards; an expiry pass that drops the burst shrinks them and
// compacts their storage, moving every flow that stays). Every flow
// present for the whole walk must be reported exactly once, a pair once
// under its first key and never under its reply key, and no flow twice
// (rhashtable walks and TBB iterators are known to miss or repeat
// entries across a resize; this one must not).
//
// "Present for the whole walk" is decided from per-key sequence numbers
// taken from one global counter: a writer stamps insDone after its Insert
// returns and remStart before it calls Remove. A walk that takes s0 before
// it starts must report key k if, read after the walk, k's latest insert
// completed before s0 and no removal started since (remStart < insDone).
func TestWalkUnderWrites(t *testing.T) {
	const (
		writers   = 4
		perWriter = 256
		stable    = 512 // present from the start to the end; every other one a pair
		burst     = 3000
	)
	clock := newFakeClock()
	dom := reclaim.NewDomain()
	tb, err := flowcache.New(flowcache.Config[wval]{
		Name:     "walk",
		Limit:    stable + writers*perWriter + burst,
		Shards:   4,
		TTL:      1000 * time.Hour,
		Timeouts: []time.Duration{time.Millisecond}, // class 1: bursts
		Class: func(v *wval) int {
			if v.burst {
				return 1
			}
			return 0
		},
		Clock:  clock.Now,
		Domain: dom,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	stableKey := func(i int) flowcache.FlowKey { return key(1<<30 | uint32(i)) }
	// A pair's reply key: k.Reverse() of its first key, as for a plain
	// connection.
	paired := func(i int) bool { return i%2 == 0 }
	for i := range stable {
		k := stableKey(i)
		if paired(i) {
			_, err = tb.InsertPair(k, k.Reverse(), wval{})
		} else {
			_, err = tb.Insert(k, wval{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	var seq atomic.Int64
	type keyState struct{ insDone, remStart atomic.Int64 }
	states := make([]keyState, writers*perWriter)
	writerKey := func(i int) flowcache.FlowKey { return key(1<<29 | uint32(i)) }

	var fail failures
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			present := make([]bool, perWriter)
			for n := 0; ; n++ {
				if n&63 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
				i := rng.IntN(perWriter)
				gi := w*perWriter + i
				st := &states[gi]
				k := writerKey(gi)
				if present[i] {
					st.remStart.Store(seq.Add(1))
					rk := k
					if paired(gi) && rng.IntN(2) == 0 {
						rk = k.Reverse() // either key removes the pair
					}
					if !tb.Remove(rk) {
						fail.add("writer %d: Remove(%v) of a present key failed", w, rk)
					}
					present[i] = false
				} else {
					var err error
					if paired(gi) {
						_, err = tb.InsertPair(k, k.Reverse(), wval{})
					} else {
						_, err = tb.Insert(k, wval{})
					}
					if err != nil {
						fail.add("writer %d: Insert: %v", w, err)
						continue
					}
					st.insDone.Store(seq.Add(1))
					present[i] = true
				}
			}
		}()
	}
	var grows, passes atomic.Int64
	wg.Add(1)
	go func() { // rebuilds: a burst grows the shards, a pass drops it, shrinks and compacts them
		defer wg.Done()
		// Registered, as a forwarder's worker is: its Synchronize runs
		// the folds of the moves its passes make.
		rd := dom.Register()
		defer rd.Unregister()
		for r := 0; ; r++ {
			select {
			case <-stop:
				return
			default:
			}
			for i := range burst {
				if _, err := tb.Insert(key(1<<28|uint32(r%4)<<16|uint32(i)), wval{burst: true}); err != nil {
					fail.add("burst insert: %v", err)
					break
				}
				if i%64 == 63 {
					rd.Quiescent()
				}
			}
			grows.Add(1)
			clock.Advance(time.Second)
			tb.Expire(clock.Now())
			passes.Add(1)
			rd.Synchronize()
		}
	}()

	// The walker is registered too: it reads the entries a walk hands it,
	// which a pass may move meanwhile, and quiesces between walks.
	rd := dom.Register()
	b := stressBudget(0, 12*time.Second, 4*time.Second)
	start := time.Now()
	minWalks := 300
	if raceEnabled {
		minWalks = 90
	}
	const kinds = 3 // Range, All, Dump
	var walks, early [kinds]int
	var reported int64
	total := func(a [kinds]int) (n int) {
		for _, x := range a {
			n += x
		}
		return n
	}
	for (total(walks) < minWalks || !b.done(start, 0)) && time.Since(start) < b.maxDur && fail.count() == 0 {
		rd.Quiescent()
		w := total(walks)
		kind := w % kinds
		s0 := seq.Add(1)
		count := make(map[flowcache.FlowKey]int, tb.Limit())
		// The reply key each reported flow has, to check pairs.
		replies := make(map[flowcache.FlowKey]flowcache.FlowKey, tb.Limit())
		note := func(k, r flowcache.FlowKey, ok bool) {
			count[k]++
			if ok {
				replies[k] = r
			}
		}
		switch kind {
		case 0:
			tb.Range(func(e *flowcache.Entry[wval]) bool {
				r, ok := e.Reply()
				note(e.Key(), r, ok)
				return true
			})
		case 1:
			for e := range tb.All() {
				r, ok := e.Reply()
				note(e.Key(), r, ok)
			}
		case 2:
			rows := tb.Dump()
			for i := range rows {
				note(rows[i].Key, rows[i].Reply, rows[i].Paired)
			}
		}
		walks[kind]++
		name := [kinds]string{"Range", "All", "Dump"}[kind]
		for k, n := range count {
			if n != 1 {
				fail.add("%s walk %d reported %v %d times", name, w, k, n)
			}
			if r, ok := replies[k]; ok {
				if r != k.Reverse() {
					fail.add("%s walk %d: pair %v reported with reply %v, want %v", name, w, k, r, k.Reverse())
				}
				if count[r] != 0 {
					fail.add("%s walk %d reported the pair %v under its reply key %v too", name, w, k, r)
				}
			}
		}
		reported += int64(len(count))
		for i := range stable {
			k := stableKey(i)
			if count[k] != 1 {
				fail.add("%s walk %d: stable key %v reported %d times", name, w, k, count[k])
			}
			if _, ok := replies[k]; ok != paired(i) {
				fail.add("%s walk %d: stable key %v reported as a pair %v, want %v", name, w, k, ok, paired(i))
			}
		}
		for gi := range states {
			st := &states[gi]
			rem := st.remStart.Load()
			ins := st.insDone.Load()
			if ins != 0 && ins < s0 && rem < ins && count[writerKey(gi)] != 1 {
				fail.add("%s walk %d: key %v present throughout (inserted at %d < walk start %d, not removed since) reported %d times",
					name, w, writerKey(gi), ins, s0, count[writerKey(gi)])
			}
		}
		// A walk stops when told: Range's fn returning false, a break
		// out of All.
		if w%10 == 0 {
			stopAt := 1 + w%200
			seen := 0
			if kind == 0 {
				tb.Range(func(*flowcache.Entry[wval]) bool { seen++; return seen < stopAt })
			} else {
				for range tb.All() {
					if seen++; seen == stopAt {
						break
					}
				}
			}
			if seen != stopAt {
				fail.add("%s stopped at flow %d went on to %d", name, stopAt, seen)
			}
			early[kind]++
		}
	}
	// Unregister before waiting: the burst goroutine's Synchronize would
	// otherwise wait for this walker's next Quiescent.
	rd.Unregister()
	close(stop)
	wg.Wait()
	fail.report(t)
	st := tb.Stats()
	t.Logf("walks: %d Range, %d All, %d Dump (%d stopped early) in %v, reporting %d flows; %d bursts, %d passes; stats: %v",
		walks[0], walks[1], walks[2], total(early), time.Since(start).Round(time.Millisecond), reported, grows.Load(), passes.Load(), st)
	if st.Grows == 0 || st.Shrinks == 0 || st.Compactions == 0 || st.Moved == 0 {
		t.Errorf("walks did not run across rebuilds and moves: grows %d, shrinks %d, compactions %d, moved %d", st.Grows, st.Shrinks, st.Compactions, st.Moved)
	}
}
