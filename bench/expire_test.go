package bench

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// base is the fake clock's origin in the pass benchmarks.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// indexBytes is the index size of the last flowcache table a pass
// benchmark built, for the floor that follows it.
var indexBytes int

// BenchmarkExpirePass is the periodic pass over a table where nothing
// expires: what a forwarder pays every second to keep its table clean.
// Every flow was seen within the last seconds of a table that has run for
// an hour, so a pass must look at every flow's last-seen time and decide
// to keep it. impl=naive is that pass over a Go map of entry pointers: it
// loads every entry to read its last-seen time.
func BenchmarkExpirePass(b *testing.B) {
	const ttl = 60 * time.Second
	for _, flows := range []int{1_000_000, 4_000_000} {
		if testing.Short() && flows > 1_000_000 {
			continue
		}
		keys := Keys(flows, 1)
		b.Run(fmt.Sprintf("impl=flowcache/flows=%d", flows), func(b *testing.B) {
			t, err := flowcache.New(flowcache.Config[State]{
				Limit: flows, TTL: ttl, Seed: 0x5eed, Domain: reclaim.NewDomain(),
				Clock: func() time.Time { return base },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer t.Close()
			start := base.Add(time.Hour)
			t.Expire(start) // the coarse clock: an hour into the table's life
			for _, k := range keys {
				if _, err := t.Insert(k, State{Action: 1}); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC() // the fill's garbage is not the pass's to mark
			i := 0
			for b.Loop() {
				// Passes 10 ms apart, all within the TTL. The clock only
				// moves forward: a clock that steps back makes passes heal
				// stamps, which is not what this measures.
				if res := t.Expire(start.Add(time.Duration(1+i) * 10 * time.Millisecond)); res.Expired != 0 {
					b.Fatalf("pass expired %d flows", res.Expired)
				}
				i++
			}
			reportPass(b, flows)
			b.ReportMetric(float64(t.Stats().LongestHold.Nanoseconds())/1e3, "hold-µs")
			indexBytes = t.Stats().Slots * 16 // a slot is a quarter of a 64-byte bucket
		})
		// The floor: streaming as many bytes as the table's index holds,
		// every word read once, which is what a pass that expires nothing
		// must at least do (issue 17's target: the pass within 2× of it).
		b.Run(fmt.Sprintf("impl=floor/flows=%d", flows), func(b *testing.B) {
			if indexBytes == 0 {
				b.Skip("needs impl=flowcache's index size")
			}
			buf := make([]uint64, indexBytes/8)
			for i := range buf {
				buf[i] = uint64(i)
			}
			var sum uint64
			for b.Loop() {
				var s0, s1, s2, s3 uint64
				for i := 0; i+4 <= len(buf); i += 4 {
					s0 += buf[i]
					s1 += buf[i+1]
					s2 += buf[i+2]
					s3 += buf[i+3]
				}
				sum += s0 + s1 + s2 + s3
			}
			if sum == 1 {
				b.Log(sum)
			}
			reportPass(b, flows)
		})
		b.Run(fmt.Sprintf("impl=naive/flows=%d", flows), func(b *testing.B) {
			type entry struct {
				lastSeen int64
				value    State
			}
			m := make(map[flowcache.FlowKey]*entry, flows)
			start := base.Add(time.Hour).UnixMilli()
			for _, k := range keys {
				m[k] = &entry{lastSeen: start, value: State{Action: 1}}
			}
			runtime.GC()
			ttlMs := ttl.Milliseconds()
			i := int64(0)
			for b.Loop() {
				now := start + (1+i)*10
				expired := 0
				for k, e := range m {
					if now-e.lastSeen >= ttlMs {
						delete(m, k)
						expired++
					}
				}
				if expired != 0 {
					b.Fatalf("pass expired %d flows", expired)
				}
				i++
			}
			reportPass(b, flows)
		})
	}
}

func reportPass(b *testing.B, flows int) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns/float64(flows), "ns/flow")
	b.ReportMetric(ns/1e6, "ms/pass")
}

// BenchmarkExpirePassClasses is BenchmarkExpirePass with the flows spread
// over timeout classes: classes=1 puts every flow in class 0; classes=4
// puts flow i in class i%4 (TTL, 2 min, 5 min, 1 h), as a conntrack table
// holds flows in several TCP states. The pass reads each slot's class from
// the bucket it streams, beside the stamp, so spreading the flows over
// classes must not make it chase entries (target: at most 1.25x).
func BenchmarkExpirePassClasses(b *testing.B) {
	const flows = 1_000_000
	keys := Keys(flows, 1)
	for _, classes := range []int{1, 4} {
		b.Run(fmt.Sprintf("impl=flowcache/classes=%d/flows=%d", classes, flows), func(b *testing.B) {
			t, err := flowcache.New(flowcache.Config[State]{
				Limit: flows, TTL: 60 * time.Second, Seed: 0x5eed, Domain: reclaim.NewDomain(),
				Clock:    func() time.Time { return base },
				Timeouts: []time.Duration{2 * time.Minute, 5 * time.Minute, time.Hour},
				Class:    func(v *State) int { return int(v.Port) },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer t.Close()
			start := base.Add(time.Hour)
			t.Expire(start)
			for i, k := range keys {
				if _, err := t.Insert(k, State{Action: 1, Port: uint16(i % classes)}); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			i := 0
			for b.Loop() {
				if res := t.Expire(start.Add(time.Duration(1+i) * 10 * time.Millisecond)); res.Expired != 0 {
					b.Fatalf("pass expired %d flows", res.Expired)
				}
				i++
			}
			reportPass(b, flows)
		})
	}
}
