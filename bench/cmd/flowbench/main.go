// Command flowbench simulates a multicore forwarder over flowcache: one
// worker per core looks up every packet's flow, creates it on a miss and
// calls Quiescent between batches, while a Reclaimer expires idle flows.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowcache/flowcache/bench"
	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

func main() {
	flows := flag.Int("flows", 200_000, "distinct flows in the traffic")
	limit := flag.Int("limit", 1_000_000, "table limit")
	dur := flag.Duration("duration", 5*time.Second, "how long to run")
	flag.Parse()

	d := reclaim.NewDomain()
	t, err := flowcache.New(flowcache.Config[bench.State]{Name: "flowbench", Limit: *limit, TTL: 2 * time.Second, Domain: d})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rec := reclaim.NewReclaimer(d, 250*time.Millisecond)
	rec.Start()
	defer rec.Close()

	keys := bench.Keys(*flows, 1)
	var packets, hits atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			r := d.Register()
			defer r.Unregister()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var n, h uint64
			for !stop.Load() {
				for range 32 {
					k := keys[rng.IntN(len(keys))]
					e, inserted, err := t.GetOrInsert(k, func() bench.State { return bench.State{Action: 1} })
					n++
					if err == nil && !inserted {
						h++
						_ = e.Value().Action
					}
				}
				r.Quiescent()
			}
			packets.Add(n)
			hits.Add(h)
		})
	}
	time.Sleep(*dur)
	stop.Store(true)
	wg.Wait()
	st := t.Stats()
	fmt.Printf("packets %d (%.1f M/s), hit ratio %.3f\n", packets.Load(), float64(packets.Load())/dur.Seconds()/1e6, float64(hits.Load())/float64(packets.Load()))
	fmt.Println(st)
}
