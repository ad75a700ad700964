// Package reclaim is flowcache's epoch domain: quiescent-state-based
// reclamation (QSBR) for Go, and the periodic Reclaimer that drives it.
//
// # Why a Go program needs grace periods
//
// Go's garbage collector already makes it memory-safe to drop a flow while
// a worker still holds it: the entry lives as long as someone points to it.
// What the collector cannot do is tell you when nobody can be *using* it
// any more. A NAT port released while a worker on another core is still
// translating a packet with that flow's mapping is handed to a new flow
// and two flows share it; a counter flushed too early misses the last
// packets. flowcache's lookups take no lock, so a writer that removes a
// flow has no way to know who loaded it. The domain supplies that: a
// removal callback (Defer) runs only after a grace period, a span in which
// every registered worker has passed a quiescent state.
//
// # Quiescent states and epochs
//
// A worker (a Reader, one per worker goroutine) declares a quiescent state
// by calling Quiescent between packet batches: "I hold no entry from
// before this point". The domain keeps one global epoch, a counter; each
// reader keeps, on its own cache line, the last epoch it saw at a
// quiescent state (seen). Work deferred while the epoch is E is due once
// the epoch has advanced to E+1 and every reader has seen E+1: each of
// them has passed a quiescent state after the advance, which came after
// the Defer, which came after the writer unpublished what it retires.
//
//	epoch      ──── 7 ─────┬──────────────────── 8 ─────────────────────────▶
//	                       │ Defer(f): target 8  ▲ Tick advances   ▲ Tick: f runs
//	worker A   Q7 [batch] Q7 [batch] Q7 [batch]  │ Q8 [batch] Q8 [batch] Q8
//	worker B   Q7 [batch ····· holding the old entry ·····]  Q8 [batch]
//	                                                         └ min(seen) = 8 ≥ 8
//
// Q7 is a Quiescent call that found the epoch at 7. A grace period since
// epoch E is over when every registered reader's seen is at least E (or it
// has unregistered); with no reader registered it is over at once. Worker
// B's long batch holds f back, and nothing else: A's batches, the Ticks
// and the writer all go on.
//
// Quiescent is the only call on the hot path. It loads the global epoch,
// which sits alone on its cache line and changes at most once per tick, and
// its own word; it stores only when the epoch has moved. A worker in an
// idle domain never writes, and a busy one writes once per advance, not
// once per batch. It never allocates, locks or waits.
//
// # Deferring and advancing
//
// Defer appends (fn, target = epoch+1) to a FIFO under the domain's mutex
// and returns; it never runs fn itself, because its caller may hold a
// shard mutex that fn would need. The alternative, advancing the epoch on
// every Defer (DPDK's rte_rcu_qsbr_start does, once per enqueued token),
// makes every worker's Quiescent store on nearly every batch while flows
// are being retired, and pulls the epoch's cache line into exclusive state
// on the writer's core each time. Recording epoch+1 lets the next Tick
// advance once for everything deferred since the last one; the price is
// that deferred work waits for a tick even when the workers are fast.
//
// A Tick (Reclaimer.Tick, or the Reclaimer's goroutine every period) runs
// the watched passes (Watch: a table's expiry, which defers callbacks for
// the flows it expires), then advances the epoch if some pending work
// targets an epoch not yet reached, then runs the work that is due. It
// never waits for a reader, so a worker that stops calling Quiescent
// delays reclamation but cannot deadlock the Reclaimer, and loses nothing:
// its work stays queued, and DomainStats shows how far behind it is
// (LagEpochs) and how old the oldest pending work is (LagTime). Once it
// quiesces or unregisters, the next Tick runs everything that was held.
//
// TryReclaim is a Tick without the passes, for a writer that has retired
// much since the last Tick: it advances the epoch if work waits, runs what
// is due, and returns at once if another goroutine is running deferred
// work. A writer that calls it past a bound on what it has deferred keeps
// its garbage bounded by the bound and its workers' quiescent points, not
// by the Reclaimer's period (DPDK's rte_rcu_qsbr defer queue reclaims on
// enqueue past trigger_reclaim_limit the same way). A flowcache Table does
// so past a quarter of its live records' bytes.
//
// Synchronize advances the epoch, waits until every reader registered at
// that moment has seen the new epoch or unregistered, and then runs the
// work that is due, including everything deferred before the call. It
// yields a few times, then sleeps with exponential backoff up to 1 ms, so
// it returns at most about 1 ms after the last reader quiesces: Quiescent
// does not wake waiters, since checking for one would cost every worker on
// every batch. Unregister does wake them.
//
// # Memory ordering
//
// Every shared word is a sync/atomic value (sequentially consistent in Go)
// or lives under the domain's mutex. The argument is the usual one for
// QSBR: the writer unpublishes an object, then Defers (which reads epoch
// E); the advance to E+1 comes after that read; a worker that stores E+1
// in seen loaded E+1 after the advance, so every load it makes afterwards
// sees the object unpublished; and everything it did with the object
// before that Quiescent happens before the grace check that loads its
// E+1, hence before the deferred function. A reader that registers while a
// check is running is not waited for, and need not be: it can only load
// what is still published.
//
// # Rules
//
//   - One Reader per worker goroutine, registered by that goroutine; only
//     it calls its Quiescent. A goroutine whose own Reader is registered
//     must not call Domain.Synchronize, or it would wait on itself
//     forever: the rule of every QSBR library. A Quiescent just before the
//     call is not enough (it reports the epoch the grace period starts
//     after); the goroutine calls its Reader's Synchronize, which counts
//     the call as its own quiescent state, or unregisters first. Such a
//     call panics, naming the rule: at once when the Reader has reported
//     from the calling goroutine, after a second's wait when the caller
//     only registered it (it may have handed it to a worker that has not
//     reported yet). misuse.go says exactly what is detected.
//   - A worker that is about to block for long (an empty receive queue)
//     should Unregister, and Register again when it resumes, so as not to
//     hold grace periods back meanwhile.
//   - Quiescent on an unregistered Reader does nothing; Unregister is
//     idempotent.
//   - Deferred functions run one at a time (the only lock held is the one
//     that keeps them so, never the domain's mutex), each exactly once, in
//     the order they were deferred (among those due). They may call Defer (the new work waits for a later grace
//     period) and Stats. They must not call Synchronize, Reclaimer.Tick or
//     Reclaimer.Close, which would wait for the deferred work in progress,
//     i.e. for themselves: such a call panics, naming the rule, and the
//     panic is recovered and counted like any other (below).
//   - A reader that holds a grace period back for more than StalledAfter
//     (10 s) shows in DomainStats.Stalled, and DomainStats.HeldBack says
//     how long the slowest reader has held one back: a Reader leaked
//     without Unregister, or a worker blocked while registered, stops
//     every OnRemove on the domain, and this is how it becomes visible.
//   - The zero Domain is ready to use, as NewDomain's is.
//   - A deferred function that panics is recovered: the panic is counted
//     in DomainStats.Panics and its value kept, formatted, in
//     DomainStats.LastPanic; the other functions still run and the
//     Reclaimer's goroutine goes on ticking. A watched pass that panics is
//     treated the same way. A deferred function that calls runtime.Goexit
//     ends the goroutine that was draining (a Reclaimer then stops
//     ticking), but the work after it is put back and runs on the next
//     drain.
//   - Passes are held weakly (package weak): a table dropped without
//     Close is still collected, and its registration disappears on the
//     next tick. The pass must not capture its owner.
//
// # Sources, and where we differ
//
// Linux RCU (McKenney and Slingwine, "Read-Copy Update", 1998; the kernel's
// Documentation/RCU) gave the vocabulary: grace period, quiescent state,
// synchronize_rcu, call_rcu. The kernel gets quiescent states for free
// from context switches and detects grace periods per CPU; goroutines have
// no such hook and migrate between threads, so ours are explicit calls,
// made per goroutine. Kernel callbacks run in softirq and must not sleep;
// ours run on an ordinary goroutine, may block (delaying the ones after
// them) and are recovered when they panic.
//
// liburcu's QSBR flavour (urcu-qsbr: rcu_quiescent_state, rcu_register_thread,
// rcu_thread_offline, synchronize_rcu, call_rcu) is the model for the
// reader side: a per-thread counter copied from a global one, zero-cost
// read-side critical sections, offline threads that grace periods skip,
// and a synchronize_rcu that takes its calling thread offline for the wait
// (our Reader.Synchronize). liburcu's readers check a futex word at each
// quiescent state to wake a sleeping synchronize_rcu; ours do not
// (Synchronize polls with backoff), and liburcu batches concurrent
// synchronize_rcu callers into one grace period, where ours each advance.
// Its call_rcu worker thread calls synchronize_rcu per batch of callbacks;
// our Tick never waits and simply runs what is already due.
//
// DPDK's rte_rcu_qsbr is the model for the defer queue: rte_rcu_qsbr_dq
// tags each retired resource with a token and reclaims, without blocking,
// those whose token every reader has acknowledged. DPDK keeps a fixed
// bitmap of thread ids sized at init; we keep a copy-on-write list of
// Readers, so registering is a (rare, locked) allocation and grace checks
// load the list without the mutex. DPDK bumps its token per enqueue; we
// advance once per tick (see above). Go's collector removes the rest of
// DPDK's machinery: there is no memory to free, only callbacks to run.
//
// # The Reclaimer
//
// NewReclaimer(d, every) ticks d every period (1 s by default, OPTE's
// expiry period) once Start is called, until Close; both are idempotent
// and Close waits for the goroutine, so nothing outlives it. No goroutine
// is started behind the caller's back: a program that drives time itself
// calls Tick.
package reclaim
