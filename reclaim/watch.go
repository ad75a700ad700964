package reclaim

import (
	"slices"
	"sync/atomic"
	"weak"
)

// watch is one registration made by Watch.
type watch struct {
	// pass runs the owner's pass and reports whether the owner was still
	// alive. It holds the owner only weakly.
	pass func() bool
	// off is set by cancel, or by a tick that found the owner collected;
	// a tick skips a watch that is off and drops it from the list.
	off atomic.Bool
}

// Watch registers pass to be run on every Reclaimer tick of d for as long
// as owner is alive and the returned cancel func has not been called. d
// holds owner only through a weak.Pointer; pass receives the strong pointer
// for the duration of the call. When the owner has been collected the
// registration is dropped on the next tick.
//
// pass must not capture owner, neither in a closure nor as a method value
// (owner.Method): d holds pass strongly, so an owner reachable from it
// would never be collected. Take the owner from the argument instead:
//
//	cancel := reclaim.Watch(d, t, func(t *Table) { t.Expire(time.Now()) })
//
// cancel is idempotent and may be called from any goroutine, pass
// included. After it returns no new run of pass starts; a run already in
// progress on a tick is not waited for. Ticks from several goroutines at
// once (two Reclaimers on d, or Tick beside a started Reclaimer) run pass
// concurrently, so it must be safe for that. A panic in pass is recovered
// and counted in DomainStats.Panics, and the registration stays. A nil
// owner or a nil pass registers nothing.
func Watch[T any](d *Domain, owner *T, pass func(owner *T)) (cancel func()) {
	if owner == nil || pass == nil {
		return func() {}
	}
	wp := weak.Make(owner)
	w := &watch{pass: func() bool {
		o := wp.Value()
		if o == nil {
			return false
		}
		pass(o)
		return true
	}}
	d.mu.Lock()
	d.watches = append(d.watches, w)
	d.mu.Unlock()
	return func() {
		if w.off.Swap(true) {
			return
		}
		d.mu.Lock()
		d.watches = slices.DeleteFunc(d.watches, func(x *watch) bool { return x == w })
		d.mu.Unlock()
	}
}

// runPasses runs every live watch once, outside d's mutex (a pass may call
// Defer, Stats, or Watch), then drops the ones whose owner is gone.
func (d *Domain) runPasses() {
	d.mu.Lock()
	ws := slices.Clone(d.watches)
	d.mu.Unlock()
	dropped := false
	for _, w := range ws {
		if w.off.Load() {
			continue
		}
		if !d.runPass(w) {
			w.off.Store(true)
			dropped = true
		}
	}
	if dropped {
		d.mu.Lock()
		d.watches = slices.DeleteFunc(d.watches, func(x *watch) bool { return x.off.Load() })
		d.mu.Unlock()
	}
}

// runPass runs one pass, recovering a panic so that one broken table does
// not take the Reclaimer (and every other table's expiry) down with it.
func (d *Domain) runPass(w *watch) (alive bool) {
	defer func() {
		if v := recover(); v != nil {
			d.recordPanic("watched pass", v)
			alive = true
		}
	}()
	return w.pass()
}
