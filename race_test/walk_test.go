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

// wval is a walk-test flow's value: stable keys never expire, bursts
// expire at the next pass.
type wval struct{ burst bool }

// TestWalkUnderWrites: Range and Dump run while writers insert and remove
// keys and a third goroutine forces rebuilds both ways (a burst of
// inserts grows the shards, an expiry pass that drops the burst shrinks
// them). Every flow present for the whole walk must be reported exactly
// once, and no flow twice (rhashtable walks and TBB iterators are known to
// miss or repeat entries across a resize; this one must not).
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
		stable    = 512 // present from the start to the end
		burst     = 3000
	)
	clock := newFakeClock()
	tb, err := flowcache.New(flowcache.Config[wval]{
		Name:   "walk",
		Limit:  stable + writers*perWriter + burst,
		Shards: 4,
		Clock:  clock.Now,
		Domain: reclaim.NewDomain(),
		Expiry: func(e *flowcache.Entry[wval]) time.Duration {
			if e.Value().burst {
				return time.Millisecond
			}
			return 1000 * time.Hour
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for i := range stable {
		if _, err := tb.Insert(key(1<<30|uint32(i)), wval{}); err != nil {
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
				if present[i] {
					st.remStart.Store(seq.Add(1))
					if !tb.Remove(writerKey(gi)) {
						fail.add("writer %d: Remove(%v) of a present key failed", w, writerKey(gi))
					}
					present[i] = false
				} else {
					if _, err := tb.Insert(writerKey(gi), wval{}); err != nil {
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
	go func() { // rebuilds: a burst grows the shards, a pass drops it and shrinks them
		defer wg.Done()
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
			}
			grows.Add(1)
			clock.Advance(time.Second)
			tb.Expire(clock.Now())
			passes.Add(1)
		}
	}()

	b := stressBudget(0, 25*time.Second, 10*time.Second)
	start := time.Now()
	minWalks := 300
	if raceEnabled {
		minWalks = 100
	}
	walks, dumps := 0, 0
	var reported int64
	for (walks < minWalks || !b.done(start, 0)) && time.Since(start) < b.maxDur && fail.count() == 0 {
		s0 := seq.Add(1)
		count := make(map[flowcache.FlowKey]int, tb.Limit())
		if walks%2 == 0 {
			tb.Range(func(e *flowcache.Entry[wval]) bool {
				count[e.Key()]++
				return true
			})
		} else {
			rows := tb.Dump()
			for i := range rows {
				count[rows[i].Key]++
			}
			dumps++
		}
		walks++
		for k, n := range count {
			if n != 1 {
				fail.add("walk %d reported %v %d times", walks, k, n)
			}
		}
		reported += int64(len(count))
		for i := range stable {
			if k := key(1<<30 | uint32(i)); count[k] != 1 {
				fail.add("walk %d: stable key %v reported %d times", walks, k, count[k])
			}
		}
		for gi := range states {
			st := &states[gi]
			rem := st.remStart.Load()
			ins := st.insDone.Load()
			if ins != 0 && ins < s0 && rem < ins && count[writerKey(gi)] != 1 {
				fail.add("walk %d: key %v present throughout (inserted at %d < walk start %d, not removed since) reported %d times",
					walks, writerKey(gi), ins, s0, count[writerKey(gi)])
			}
		}
	}
	close(stop)
	wg.Wait()
	fail.report(t)
	st := tb.Stats()
	t.Logf("%d walks (%d Dumps) in %v reporting %d flows; %d bursts, %d passes; stats: %v",
		walks, dumps, time.Since(start).Round(time.Millisecond), reported, grows.Load(), passes.Load(), st)
	if st.Grows == 0 || st.Shrinks == 0 {
		t.Errorf("walks did not run across rebuilds: grows %d, shrinks %d", st.Grows, st.Shrinks)
	}
}
