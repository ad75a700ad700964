package reclaim_test

import (
	"testing"

	"github.com/flowcache/flowcache/reclaim"
)

// BenchmarkQuiescent is the cost a worker pays per batch in a domain whose
// epoch is not moving (the common case between ticks): two loads.
func BenchmarkQuiescent(b *testing.B) {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()
	b.ReportAllocs()
	for b.Loop() {
		r.Quiescent()
	}
}

// BenchmarkQuiescentParallel: every goroutine its own Reader, all reading
// the one epoch word. It stays flat with the goroutine count when nothing
// is shared-written.
func BenchmarkQuiescentParallel(b *testing.B) {
	d := reclaim.NewDomain()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := d.Register()
		defer r.Unregister()
		for pb.Next() {
			r.Quiescent()
		}
	})
}

// BenchmarkQuiescentAdvancing: the epoch moves before every call, so every
// Quiescent stores; the figure includes the advance itself (an atomic add
// on the same core). In production the epoch moves at most once per tick.
func BenchmarkQuiescentAdvancing(b *testing.B) {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()
	b.ReportAllocs()
	for b.Loop() {
		reclaim.Advance(d)
		r.Quiescent()
	}
}

// BenchmarkReaderSynchronize is a whole grace period for a goroutine that
// is the only reader: advance, report, check, drain an empty queue.
func BenchmarkReaderSynchronize(b *testing.B) {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()
	b.ReportAllocs()
	for b.Loop() {
		r.Synchronize()
	}
}

// BenchmarkDefer is the writer's cost to retire one object.
func BenchmarkDefer(b *testing.B) {
	d := reclaim.NewDomain()
	rc := reclaim.NewReclaimer(d, 0)
	fn := func() {}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Defer(fn)
		if i++; i%4096 == 0 {
			rc.Tick()
		}
	}
}
