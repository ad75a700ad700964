package reclaim_test

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout bounds every wait in these tests; none of them should come near it.
const timeout = 10 * time.Second

// within runs f on another goroutine and fails the test if it has not
// returned within timeout: the check that Tick and Synchronize do not hang.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("%s did not return within %v", what, timeout)
	}
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// tick runs one Reclaimer tick of d, bounded.
func tick(t *testing.T, d *reclaim.Domain) {
	t.Helper()
	within(t, "Tick", NewTicker(d).Tick)
}

// NewTicker is a Reclaimer that is never started: its Tick is the unit of
// time in these tests.
func NewTicker(d *reclaim.Domain) *reclaim.Reclaimer { return reclaim.NewReclaimer(d, 0) }

func TestDeferNeverInline(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drive func(*testing.T, *reclaim.Domain)
	}{
		{"tick", tick},
		{"synchronize", func(t *testing.T, d *reclaim.Domain) { within(t, "Synchronize", d.Synchronize) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			var ran atomic.Int64
			d.Defer(func() { ran.Add(1) })
			if n := ran.Load(); n != 0 {
				t.Fatalf("Defer ran fn inline (%d runs)", n)
			}
			if s := d.Stats(); s.Pending != 1 {
				t.Fatalf("Pending = %d after Defer, want 1", s.Pending)
			}
			tc.drive(t, d) // no reader: the grace period is over at once
			if n := ran.Load(); n != 1 {
				t.Fatalf("fn ran %d times after one %s with no reader, want 1", n, tc.name)
			}
			tc.drive(t, d)
			if n := ran.Load(); n != 1 {
				t.Fatalf("fn ran %d times after two %ss, want 1", n, tc.name)
			}
			if s := d.Stats(); s.Pending != 0 || s.Run != 1 {
				t.Fatalf("Stats = %v, want pending=0 run=1", s)
			}
		})
	}
}

func TestDeferNil(t *testing.T) {
	d := reclaim.NewDomain()
	d.Defer(nil)
	if s := d.Stats(); s.Pending != 0 {
		t.Fatalf("Defer(nil) queued work: %v", s)
	}
	tick(t, d)
	if s := d.Stats(); s.Panics != 0 {
		t.Fatalf("Defer(nil) panicked: %v", s)
	}
}

func TestDeferWaitsForReader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release func(*testing.T, *reclaim.Domain, *reclaim.Reader)
	}{
		{"quiescent then tick", func(t *testing.T, d *reclaim.Domain, r *reclaim.Reader) {
			r.Quiescent()
			tick(t, d)
		}},
		{"unregister then tick", func(t *testing.T, d *reclaim.Domain, r *reclaim.Reader) {
			r.Unregister()
			tick(t, d)
		}},
		{"unregister then synchronize", func(t *testing.T, d *reclaim.Domain, r *reclaim.Reader) {
			r.Unregister()
			within(t, "Synchronize", d.Synchronize)
		}},
		{"reader synchronize", func(t *testing.T, d *reclaim.Domain, r *reclaim.Reader) {
			within(t, "Reader.Synchronize", r.Synchronize)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			r := d.Register()
			defer r.Unregister()
			var ran atomic.Int64
			d.Defer(func() { ran.Add(1) })

			// A Quiescent before the epoch has moved reports nothing new:
			// the reader may have loaded the retired object after it.
			r.Quiescent()
			tick(t, d)
			tick(t, d)
			if n := ran.Load(); n != 0 {
				t.Fatalf("fn ran before the reader passed a quiescent state after the Defer")
			}
			if s := d.Stats(); s.Pending != 1 || s.LagEpochs != 1 {
				t.Fatalf("Stats = %v, want pending=1 lag=1", s)
			}

			tc.release(t, d, r)
			if n := ran.Load(); n != 1 {
				t.Fatalf("fn ran %d times after the release, want 1", n)
			}
			if s := d.Stats(); s.Pending != 0 || s.LagEpochs != 0 {
				t.Fatalf("Stats = %v, want pending=0 lag=0", s)
			}
		})
	}
}

func TestIdleDomainKeepsItsEpoch(t *testing.T) {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()
	for range 3 {
		tick(t, d)
		r.Quiescent()
	}
	if e := d.Stats().Epoch; e != 0 {
		t.Fatalf("epoch moved to %d with nothing deferred; workers would store for nothing", e)
	}
	d.Defer(func() {})
	tick(t, d)
	tick(t, d)
	if e := d.Stats().Epoch; e != 1 {
		t.Fatalf("epoch = %d after one Defer and two ticks, want one advance", e)
	}
}

func TestQuiescentAfterUnregister(t *testing.T) {
	d := reclaim.NewDomain()
	r := d.Register()
	r.Unregister()
	r.Unregister() // idempotent
	d.Defer(func() {})
	tick(t, d)
	r.Quiescent() // a no-op: it must not bring the reader back
	if s := d.Stats(); s.Readers != 0 || s.Pending != 0 {
		t.Fatalf("Stats = %v, want no reader and nothing pending", s)
	}
	within(t, "Synchronize", d.Synchronize)
}

func TestSynchronizeNoReaders(t *testing.T) {
	d := reclaim.NewDomain()
	var order []int
	for i := range 3 {
		d.Defer(func() { order = append(order, i) })
	}
	within(t, "Synchronize", d.Synchronize)
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Fatalf("Synchronize ran %v, want [0 1 2]", order)
	}
}

func TestSynchronizeWaitsForReader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release func(*reclaim.Reader)
	}{
		{"quiescent", (*reclaim.Reader).Quiescent},
		{"unregister", (*reclaim.Reader).Unregister},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			registered := make(chan struct{})
			release := make(chan struct{})
			workerDone := make(chan struct{})
			go func() { // the worker owns its Reader
				defer close(workerDone)
				r := d.Register()
				defer r.Unregister()
				close(registered)
				<-release
				tc.release(r)
			}()
			<-registered

			var ran atomic.Bool
			d.Defer(func() { ran.Store(true) })
			synced := make(chan struct{})
			go func() {
				defer close(synced)
				d.Synchronize()
			}()
			// Synchronize has seen the worker behind and is waiting on it.
			eventually(t, "Synchronize to wait", func() bool { return d.Stats().Synchronizing == 1 })
			select {
			case <-synced:
				t.Fatal("Synchronize returned while the reader had not quiesced")
			default:
			}
			if ran.Load() {
				t.Fatal("deferred work ran while the reader had not quiesced")
			}

			close(release)
			select {
			case <-synced:
			case <-time.After(timeout):
				t.Fatalf("Synchronize still waiting after the reader's %s", tc.name)
			}
			if !ran.Load() {
				t.Fatal("Synchronize returned without running the work deferred before it")
			}
			<-workerDone
		})
	}
}

// TestUnregisterWakesSynchronize pins the wake-up: with no yields and
// every sleep an hour long, only Unregister's wake can end the wait in
// time, wherever in the wait it comes.
func TestUnregisterWakesSynchronize(t *testing.T) {
	defer reclaim.SetBackoff(0, time.Hour, time.Hour)()
	d := reclaim.NewDomain()
	for range 5 {
		r := d.Register()
		synced := make(chan struct{})
		go func() {
			defer close(synced)
			d.Synchronize()
		}()
		eventually(t, "Synchronize to wait", func() bool { return d.Stats().Synchronizing == 1 })
		r.Unregister()
		select {
		case <-synced:
		case <-time.After(timeout):
			t.Fatal("Unregister did not release Synchronize")
		}
	}
}

func TestStalledReader(t *testing.T) {
	d := reclaim.NewDomain()
	var now atomic.Int64
	reclaim.SetClock(d, func() time.Duration { return time.Duration(now.Load()) })
	stalled := d.Register() // registers and never quiesces
	healthy := d.Register()
	defer healthy.Unregister()

	const rounds, perRound = 10, 10
	runs := make([]int, rounds*perRound)
	var order []int
	for round := range rounds {
		for j := range perRound {
			id := round*perRound + j
			d.Defer(func() {
				runs[id]++
				order = append(order, id)
			})
		}
		now.Add(int64(time.Second))
		tick(t, d) // bounded: Tick never waits for the stalled reader
		healthy.Quiescent()

		s := d.Stats()
		want := reclaim.DomainStats{
			Readers:   2,
			Epoch:     uint64(round + 1),
			LagEpochs: uint64(round + 1),
			LagTime:   time.Duration(round+1) * time.Second,
			Pending:   (round + 1) * perRound,
			HeldBack:  time.Duration(round) * time.Second, // since the first advance, at 1 s
		}
		if s != want {
			t.Fatalf("round %d: Stats = %v, want %v", round, s, want)
		}
	}

	stalled.Unregister()
	tick(t, d)
	for id, n := range runs {
		if n != 1 {
			t.Fatalf("deferred %d ran %d times, want exactly once", id, n)
		}
	}
	if !slices.IsSorted(order) {
		t.Fatalf("deferred work ran out of order: %v", order)
	}
	if s := d.Stats(); s.Pending != 0 || s.LagEpochs != 0 || s.LagTime != 0 || s.Run != rounds*perRound {
		t.Fatalf("Stats = %v after the stalled reader left", s)
	}
}

func TestDeferredPanics(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
		want  string
	}{
		{"string", "boom", "deferred func: boom"},
		{"error", fmt.Errorf("port %d leaked", 7), "deferred func: port 7 leaked"},
		{"nil", nil, "deferred func: panic called with nil argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			var order []string
			d.Defer(func() { order = append(order, "before") })
			d.Defer(func() { panic(tc.value) })
			d.Defer(func() { order = append(order, "after") })
			within(t, "Synchronize", d.Synchronize)
			if !slices.Equal(order, []string{"before", "after"}) {
				t.Fatalf("ran %v, want [before after]", order)
			}
			s := d.Stats()
			if s.Panics != 1 || s.Run != 3 || !strings.HasPrefix(s.LastPanic, tc.want) {
				t.Fatalf("Stats = %v, want panics=1 run=3 last panic %q", s, tc.want)
			}
		})
	}
}

func TestDeferFromDeferred(t *testing.T) {
	d := reclaim.NewDomain()
	var inner atomic.Int64
	var seen reclaim.DomainStats
	d.Defer(func() {
		seen = d.Stats() // must not deadlock
		d.Defer(func() { inner.Add(1) })
	})
	tick(t, d)
	if seen.Run != 0 {
		t.Fatalf("Stats inside the first fn = %v, want run=0", seen)
	}
	if n := inner.Load(); n != 0 {
		t.Fatal("work deferred by a deferred fn ran in the same drain, before its own grace period")
	}
	tick(t, d)
	if n := inner.Load(); n != 1 {
		t.Fatalf("inner fn ran %d times after the next tick, want 1", n)
	}
}

// TestDeferredGoexit: a deferred fn that ends its goroutine (t.FailNow on
// a worker, say) takes the drain with it, but loses none of the work
// behind it.
func TestDeferredGoexit(t *testing.T) {
	d := reclaim.NewDomain()
	var order []string
	d.Defer(func() { order = append(order, "a") })
	d.Defer(func() { order = append(order, "exit"); runtime.Goexit() })
	d.Defer(func() { order = append(order, "b") })
	d.Defer(func() { order = append(order, "c") })
	within(t, "Synchronize", d.Synchronize) // its goroutine exits inside
	if !slices.Equal(order, []string{"a", "exit"}) {
		t.Fatalf("ran %v before the Goexit, want [a exit]", order)
	}
	if s := d.Stats(); s.Pending != 2 {
		t.Fatalf("Stats = %v, want the 2 fns after the Goexit pending", s)
	}
	d.Defer(func() { order = append(order, "d") })
	tick(t, d)
	if !slices.Equal(order, []string{"a", "exit", "b", "c", "d"}) {
		t.Fatalf("ran %v, want [a exit b c d]", order)
	}
}

func TestDefault(t *testing.T) {
	if a, b := reclaim.Default(), reclaim.Default(); a == nil || a != b {
		t.Fatal("Default() must return one domain")
	}
}

func TestStatsString(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    reclaim.DomainStats
		want string
	}{
		{"zero", reclaim.DomainStats{}, "readers=0 epoch=0 lag=0 epochs/0s pending=0 run=0 panics=0 watched=0"},
		{"busy", reclaim.DomainStats{
			Readers: 4, Epoch: 9, LagEpochs: 2, LagTime: 1500 * time.Millisecond, Pending: 7,
			Run: 100, Panics: 1, LastPanic: "deferred func: boom", Watched: 3, Synchronizing: 1,
		}, `readers=4 epoch=9 lag=2 epochs/1.5s pending=7 run=100 panics=1 watched=3 synchronizing=1 last-panic="deferred func: boom"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.String(); got != tc.want {
				t.Fatalf("String() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	if reclaim.ReaderSize != reclaim.CacheLine {
		t.Errorf("Reader is %d bytes, want exactly %d: its word must not share a line", reclaim.ReaderSize, reclaim.CacheLine)
	}
	if reclaim.EpochOffset < reclaim.CacheLine || reclaim.DomainSize-reclaim.EpochOffset < reclaim.CacheLine {
		t.Errorf("epoch at offset %d of %d: want a full cache line of padding on each side", reclaim.EpochOffset, reclaim.DomainSize)
	}
}

func TestQuiescentAllocs(t *testing.T) {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()
	d.Defer(func() {})
	if n := testing.AllocsPerRun(1000, func() {
		r.Quiescent()
		r.Quiescent()
	}); n != 0 {
		t.Fatalf("Quiescent allocates %v times per call", n)
	}
}

// TestGracePeriods is the correctness test of the domain: workers use a
// shared object between quiescent states while a writer keeps replacing it
// and defers marking the old one dead. No worker may ever see a dead
// object during a use. Registration churns, a Reclaimer ticks and the
// writer mixes Synchronize in, so every path that runs deferred work is
// exercised, under -race.
func TestGracePeriods(t *testing.T) {
	type object struct {
		dead atomic.Bool
		gen  int
	}
	d := reclaim.NewDomain()
	var current atomic.Pointer[object]
	current.Store(&object{})

	rc := reclaim.NewReclaimer(d, 50*time.Microsecond)
	rc.Start()
	defer rc.Close()

	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		uses, bad atomic.Int64
	)
	for w := range max(4, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			r := d.Register()
			defer func() { r.Unregister() }()
			for i := 0; !stop.Load(); i++ {
				p := current.Load()
				for range 4 { // a use that spans scheduling points
					if p.dead.Load() {
						bad.Add(1)
					}
					runtime.Gosched()
				}
				_ = p.gen
				uses.Add(1)
				r.Quiescent()
				if w == 0 && i%50 == 0 { // churn registration
					r.Unregister()
					r = d.Register()
				}
			}
		})
	}

	run := time.Second
	if testing.Short() {
		run = 200 * time.Millisecond
	}
	retired := 0
	for deadline := time.Now().Add(run); time.Now().Before(deadline); {
		old := current.Swap(&object{gen: retired + 1})
		d.Defer(func() { old.dead.Store(true) })
		retired++
		if retired%64 == 0 {
			d.Synchronize() // the writer holds no Reader, so this is allowed
		}
		runtime.Gosched()
	}
	stop.Store(true)
	wg.Wait()
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	d.Synchronize()

	if n := bad.Load(); n != 0 {
		t.Fatalf("workers saw a dead object %d times: a grace period was cut short", n)
	}
	s := d.Stats()
	if s.Pending != 0 || s.Run != uint64(retired) || s.Readers != 0 {
		t.Fatalf("Stats = %v after %d retirements, want all run", s, retired)
	}
	t.Logf("%d uses, %d retirements, %v", uses.Load(), retired, s)
	if uses.Load() == 0 {
		t.Fatal("workers made no progress")
	}
}

// TryReclaim runs what is due without a tick and without waiting: work
// deferred before a reader's quiescent point runs, work that reader still
// holds back stays queued, and a call from inside deferred work (where
// another drain is running) returns at once.
func TestTryReclaim(t *testing.T) {
	d := reclaim.NewDomain()
	r := d.Register()
	defer r.Unregister()
	var ran atomic.Int64
	d.Defer(func() { ran.Add(1) })
	// The reader has not passed a quiescent point since the advance that
	// TryReclaim makes: nothing is due yet, and TryReclaim does not wait.
	if n := d.TryReclaim(); n != 0 || ran.Load() != 0 {
		t.Fatalf("ran %d (%d) before the reader quiesced", n, ran.Load())
	}
	r.Quiescent()
	if n := d.TryReclaim(); n != 1 || ran.Load() != 1 {
		t.Fatalf("ran %d (%d) after the reader quiesced; want 1", n, ran.Load())
	}
	// From inside deferred work another drain is running: it returns 0
	// at once instead of deadlocking on it.
	inner := -1
	d.Defer(func() { inner = d.TryReclaim() })
	r.Quiescent()
	d.TryReclaim()
	r.Quiescent()
	d.TryReclaim()
	if inner != 0 {
		t.Fatalf("TryReclaim inside deferred work returned %d, want 0", inner)
	}
}
