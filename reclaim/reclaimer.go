package reclaim

import (
	"sync"
	"sync/atomic"
	"time"
)

// A Reclaimer drives a Domain: on every tick it runs the domain's watched
// passes (a flowcache Table's expiry), advances the epoch if work is
// pending, and runs the deferred work that is due. It never waits for a
// reader, so a stalled worker delays reclamation but not the ticks.
//
// Nothing runs until Start; a program that drives time itself can call
// Tick instead and never Start.
type Reclaimer struct {
	d     *Domain
	every time.Duration

	loopG atomic.Int64 // the goroutine's id, so Close from it panics (misuse.go)

	mu      sync.Mutex
	started bool
	closed  bool
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the goroutine has returned
}

// NewReclaimer returns a Reclaimer that, once started, ticks d once per
// period of length every. every <= 0 means one second, the period of
// OPTE's expiry pass; a nil d means Default().
func NewReclaimer(d *Domain, every time.Duration) *Reclaimer {
	if d == nil {
		d = Default()
	}
	if every <= 0 {
		every = time.Second
	}
	return &Reclaimer{d: d, every: every, stop: make(chan struct{}), done: make(chan struct{})}
}

// Start starts the Reclaimer's goroutine, which ticks every period until
// Close. Calling Start again, or after Close, does nothing.
func (r *Reclaimer) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	go r.loop()
}

func (r *Reclaimer) loop() {
	r.loopG.Store(goid())
	defer close(r.done)
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.d.tick()
		}
	}
}

// Close stops the goroutine and waits for it to return, letting a tick in
// progress finish. Deferred work that is not yet due stays in the domain
// for a later Synchronize or another Reclaimer. Close is idempotent and
// always returns nil; it must not be called from a deferred function or a
// watched pass, which would make the goroutine wait for itself: such a
// call panics, naming the rule.
func (r *Reclaimer) Close() error {
	me := goid()
	r.d.checkNotDraining(me, "Reclaimer.Close")
	if g := r.loopG.Load(); g != 0 && g == me {
		panic("reclaim: Reclaimer.Close called from the Reclaimer's own goroutine (a watched pass): it would wait for itself")
	}
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	started := r.started
	r.mu.Unlock()
	if started {
		<-r.done
	}
	return nil
}

// Tick runs one tick synchronously on the calling goroutine: every watched
// pass (dropping those whose owner was collected), then one advance of the
// epoch if work is pending, then the deferred work that is due. It never
// waits for a reader. It works whether or not the Reclaimer is started or
// closed.
func (r *Reclaimer) Tick() { r.d.tick() }
