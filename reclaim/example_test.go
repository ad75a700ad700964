package reclaim_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// A worker forwards batches with the current route and quiesces between
// them; a writer replaces the route and defers releasing the old one, which
// happens only once the worker can no longer be using it.
func Example() {
	d := reclaim.NewDomain()
	var route atomic.Pointer[string]
	route.Store(ptr("via 10.0.0.1"))

	var stop atomic.Bool
	registered, done := make(chan struct{}), make(chan struct{})
	go func() { // the worker
		defer close(done)
		r := d.Register() // one Reader per worker goroutine
		defer r.Unregister()
		close(registered)
		for !stop.Load() {
			_ = *route.Load() // forward a batch with the route
			r.Quiescent()     // holds nothing from before this point
			runtime.Gosched()
		}
	}()
	<-registered

	old := route.Swap(ptr("via 10.0.0.2"))
	d.Defer(func() { fmt.Println("released", *old) }) // never runs inline
	fmt.Println("pending:", d.Stats().Pending)
	d.Synchronize() // waits for the worker's next Quiescent, then runs the release
	fmt.Println("pending:", d.Stats().Pending)

	stop.Store(true)
	<-done
	// Output:
	// pending: 1
	// released via 10.0.0.1
	// pending: 0
}

// A goroutine that owns a registered Reader synchronizes through it: the
// call counts as its own quiescent state, so it does not wait on itself.
func ExampleReader_Synchronize() {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()

	d.Defer(func() { fmt.Println("released") })
	r.Synchronize() // d.Synchronize() here would wait for r forever
	fmt.Println(d.Stats())
	// Output:
	// released
	// readers=1 epoch=1 lag=0 epochs/0s pending=0 run=1 panics=0 watched=0
}

// A Reclaimer runs the deferred work, and the passes registered with Watch,
// on its own goroutine until Close.
func ExampleNewReclaimer() {
	d := reclaim.NewDomain()
	r := reclaim.NewReclaimer(d, 10*time.Millisecond) // 0 means every second
	r.Start()
	defer r.Close()

	released := make(chan struct{})
	d.Defer(func() { close(released) })
	<-released // the next tick runs it: no reader is registered
	fmt.Println("released by the reclaimer")
	// Output:
	// released by the reclaimer
}

// A table registers its expiry pass with Watch. The pass takes the table
// from its argument, so the domain holds the table only weakly.
func ExampleWatch() {
	type table struct{ passes int }
	d := reclaim.NewDomain()
	t := &table{}
	cancel := reclaim.Watch(d, t, func(t *table) { t.passes++ })

	r := reclaim.NewReclaimer(d, 0) // never started: the program drives time
	r.Tick()
	r.Tick()
	cancel() // what the table's Close does
	r.Tick()
	fmt.Println("passes:", t.passes, "watched:", d.Stats().Watched)
	// Output:
	// passes: 2 watched: 0
}

func ptr[T any](v T) *T { return &v }
