package reclaim

import (
	"fmt"
	"runtime"
	"time"
)

// Misuse that would wait forever panics instead, with the rule it broke.
// Go has no goroutine identity for a program to use, so the checks read
// the goroutine's id from the header of its stack trace (goid): about a
// microsecond, paid only by calls that are never on a worker's
// per-batch path (Register, a Reader's first report, Synchronize,
// Reclaimer.Close, and each drain that runs deferred work), never by
// Quiescent's common path or by Defer.
//
// What is detected, exactly:
//
//   - Synchronize (either one), Tick or Close called by a goroutine that
//     is running deferred work of the same domain (an OnRemove callback,
//     a fold): the drain that runs it holds the lock they wait for.
//   - Domain.Synchronize, or Reader.Synchronize, waiting for a registered
//     Reader that belongs to the calling goroutine. A Reader belongs to
//     the goroutine that made its first report (its first Quiescent after
//     the epoch moved), and until then to the goroutine that registered
//     it. A Reader known to be the caller's, by its report, panics at
//     once; one the caller only registered panics once the wait has lasted
//     ownerGrace, since the Reader may have been handed to a worker that
//     has not reported yet (register in the worker to avoid the delay).
//   - Close of a started Reclaimer from its own goroutine (a watched pass
//     or a deferred function it runs), which would wait for itself.
//
// Not detected: a deferred function that blocks on something its own
// drain holds in the caller's program, and a Synchronize that waits for a
// Reader whose goroutine is blocked on the caller by other means (a
// channel, a lock): those still wait forever, as any Go program would.

// ownerGrace is how long Synchronize waits for a Reader registered by the
// calling goroutine before it takes the Reader to be the caller's own.
var ownerGrace = time.Second

// goid is the calling goroutine's id, from the first line of its stack
// trace ("goroutine 18 [running]:").
func goid() int64 {
	var buf [32]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	var id int64
	for _, c := range b[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + int64(c-'0')
	}
	return id
}

// checkNotDraining panics if goroutine me is running d's deferred work:
// what would be called would wait for that work, i.e. for itself.
func (d *Domain) checkNotDraining(me int64, what string) {
	if g := d.drainer.Load(); g != 0 && g == me {
		panic(fmt.Sprintf("reclaim: %s called from inside deferred work (an OnRemove callback, say): it would wait for itself; deferred functions must not call Synchronize, Reclaimer.Tick or Reclaimer.Close", what))
	}
}

// checkNotOwn panics if a reader that has not seen target belongs to
// goroutine me, which is waiting for it and so will never let it pass.
// waited is how long the wait has lasted.
func checkNotOwn(readers []*Reader, target uint64, me int64, waited time.Duration) {
	for _, r := range readers {
		if r.seen.Load() >= target || r.owner.Load() != me {
			continue
		}
		if r.reported.Load() || waited >= ownerGrace {
			panic("reclaim: Domain.Synchronize called by a goroutine whose own Reader is registered: it would wait for itself forever; call that Reader's Synchronize (which counts as its quiescent state), or Unregister it first")
		}
	}
}

// advanceLog keeps when the latest epochs began (in d.elapsed time), so
// that Stats can say how long a reader behind the epoch has held a grace
// period back. Written under d.mu.
type advanceLog struct {
	epoch [advanceLogLen]uint64
	at    [advanceLogLen]time.Duration
	n     int // entries written, in all
}

const advanceLogLen = 64

// note records that epoch began at at.
func (l *advanceLog) note(epoch uint64, at time.Duration) {
	i := l.n % advanceLogLen
	l.epoch[i], l.at[i] = epoch, at
	l.n++
}

// heldSince is how long ago epoch began, as of now: how long a reader
// that has not reported it has held a grace period back. An epoch older
// than the log counts from the oldest one logged (a lower bound); one
// never logged (an advance made by a test) counts 0.
func (l *advanceLog) heldSince(epoch uint64, now time.Duration) time.Duration {
	oldest, found := time.Duration(0), false
	for i := range min(l.n, advanceLogLen) {
		if l.epoch[i] == epoch {
			return max(0, now-l.at[i])
		}
		if l.epoch[i] > epoch && (!found || l.at[i] < oldest) {
			oldest, found = l.at[i], true
		}
	}
	if !found {
		return 0
	}
	return max(0, now-oldest)
}

// noteAdvance records the start of an epoch that Synchronize began.
func (d *Domain) noteAdvance(epoch uint64) {
	at := d.elapsed()
	d.mu.Lock()
	d.advances.note(epoch, at)
	d.mu.Unlock()
}

// StalledAfter is how long a reader may hold a grace period back before
// DomainStats counts it as Stalled. A healthy worker quiesces between
// batches, and a grace period then ends within two Reclaimer periods
// (a second each by default).
const StalledAfter = 10 * time.Second
