package flowcache

import (
	"math"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/flowcache/flowcache/shard"
)

// How the table gives memory back between passes (invariant 16 in
// docs/DESIGN.md, "Storage and moves"):
//
//   - A writer settles every shard it locked before it lets go of it
//     (unlock): the chunks its removals left at half live or under are
//     evacuated then, so every chunk but the one being filled is more than
//     half live whenever no writer holds the shard, whether or not a pass
//     runs.
//   - Work that waits for a grace period — folds of moved chunks, the
//     OnRemove of flows that left, and the release of their values — is
//     counted in pending bytes; past a bound a writer asks the domain to
//     reclaim at once (Domain.TryReclaim) instead of waiting for the
//     Reclaimer's tick, so a flood's garbage is bounded by the bound and
//     the workers' quiescent points, not by the Reclaimer's period.
//   - A flow that left keeps its record until its chunk goes, but not what
//     its value points to: once its grace period is over (and its OnRemove
//     has run) its value is zeroed, as sync.Map lets go of a deleted value
//     (golang/go#40999).

// pending is the bytes a table has handed to its domain that come back
// once a grace period is over.
type pending struct {
	_ [cacheLine]byte
	n atomic.Int64
	// trying is set while a writer runs TryReclaim for the table, so that
	// the writers behind it do not queue on the domain too.
	trying atomic.Bool
	_      [cacheLine - 16]byte
}

// minPending is the smallest pending bound: below it a writer never asks
// for an early grace period, which keeps a small table from advancing the
// epoch (and making every worker store at its next quiescent point) on
// almost every write.
const minPending = 256 << 10

// pendingLimit is the bound on pending bytes past which a writer asks the
// domain to reclaim: a quarter of what the live flows' records take.
func (t *Table[V]) pendingLimit() int64 {
	return max(minPending, t.live.Load()*int64(recordBytes[V]())/4)
}

func recordBytes[V any]() uintptr {
	var e Entry[V]
	return unsafe.Sizeof(e)
}

// unlock settles s, then releases its mutex: the chunks the write left at
// half live or under are evacuated (the storage's bound), and what they
// moved is folded after a grace period.
func (t *Table[V]) unlock(s *shard.Shard[Entry[V]]) {
	if m := s.SettleLocked(); !m.Empty() {
		t.folds(s, m)
	}
	s.Unlock()
}

// reclaimIfPending asks the domain to run the work whose grace period is
// over, when more than the pending bound waits for one. A writer calls it
// with no shard locked: the work it may run takes shard locks (folds) and
// calls OnRemove.
func (t *Table[V]) reclaimIfPending() {
	if t.pend.n.Load() <= t.pendingLimit() || !t.pend.trying.CompareAndSwap(false, true) {
		return
	}
	t.domain.TryReclaim()
	t.pend.trying.Store(false)
}

// releasedMark is the last-seen time of a record whose value was
// released: no clock shows it, so a lookup's refresh, which compares
// last seen with the coarse clock, always takes its slow path on such a
// record, and finds the mark there (see refresh).
const releasedMark = math.MinInt64

// release lets go of what a flow that left points to: its value is
// zeroed. It runs once the flow's grace period is over and its OnRemove
// has run, so no registered worker holds the flow and no callback reads
// it; the mark goes first, so a lookup from an unregistered goroutine that
// still reaches the record (through a slot word it loaded before the flow
// left) sees the mark and looks again instead of returning it.
func release[V any](e *Entry[V]) {
	e.lastSeen.Store(releasedMark)
	var zero V
	e.value = zero
}

// hasPointers reports whether a value of type t can hold a pointer that
// the collector follows.
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Chan, reflect.Func,
		reflect.Interface, reflect.Slice, reflect.String:
		return true
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}
