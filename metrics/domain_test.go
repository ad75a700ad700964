package metrics_test

import (
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/metrics"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// distinctDomainStats sets every DomainStats field to its own value.
func distinctDomainStats() reclaim.DomainStats {
	return reclaim.DomainStats{
		Readers:       1,
		Epoch:         2,
		LagEpochs:     3,
		LagTime:       4500 * time.Millisecond,
		Pending:       5,
		Run:           6,
		Panics:        7,
		LastPanic:     "deferred func: boom",
		Watched:       8,
		Synchronizing: 9,
		HeldBack:      10500 * time.Millisecond,
		Stalled:       11,
	}
}

const domainWant = `
# HELP flowcache_domain_deferred_pending Deferred functions (OnRemove callbacks, retired memory) waiting for their grace period.
# TYPE flowcache_domain_deferred_pending gauge
flowcache_domain_deferred_pending 5
# HELP flowcache_domain_deferred_run_total Deferred functions run after their grace period, those that panicked included.
# TYPE flowcache_domain_deferred_run_total counter
flowcache_domain_deferred_run_total 6
# HELP flowcache_domain_epochs_total The domain's global epoch: grace periods started since the domain was created.
# TYPE flowcache_domain_epochs_total counter
flowcache_domain_epochs_total 2
# HELP flowcache_domain_held_back_seconds The longest any registered reader has held a grace period back right now: time since the epoch it has yet to report began. 0 when every reader is current.
# TYPE flowcache_domain_held_back_seconds gauge
flowcache_domain_held_back_seconds 10.5
# HELP flowcache_domain_lag_epochs How many epochs the slowest reader is behind the global epoch.
# TYPE flowcache_domain_lag_epochs gauge
flowcache_domain_lag_epochs 3
# HELP flowcache_domain_lag_seconds Age of the oldest deferred function still waiting for its grace period, 0 when none waits. Up to one Reclaimer period is normal; more means a reader is not reaching its quiescent points.
# TYPE flowcache_domain_lag_seconds gauge
flowcache_domain_lag_seconds 4.5
# HELP flowcache_domain_panics_total Deferred functions and watched passes that panicked; the domain recovered each one.
# TYPE flowcache_domain_panics_total counter
flowcache_domain_panics_total 7
# HELP flowcache_domain_readers Registered readers (worker goroutines) that every grace period waits for.
# TYPE flowcache_domain_readers gauge
flowcache_domain_readers 1
# HELP flowcache_domain_readers_stalled Readers that have held a grace period back for more than 10 s (reclaim.StalledAfter): a worker that stopped calling Quiescent without unregistering, which stops every OnRemove on the domain.
# TYPE flowcache_domain_readers_stalled gauge
flowcache_domain_readers_stalled 11
# HELP flowcache_domain_synchronize_waiters Synchronize calls waiting for a reader right now.
# TYPE flowcache_domain_synchronize_waiters gauge
flowcache_domain_synchronize_waiters 9
# HELP flowcache_domain_watched_passes Periodic passes registered with the domain (one per open table) that each Reclaimer tick runs.
# TYPE flowcache_domain_watched_passes gauge
flowcache_domain_watched_passes 8
`

// TestDomainCollectorFake: every DomainStats field, each a distinct value,
// lands in its series exactly.
func TestDomainCollectorFake(t *testing.T) {
	st := distinctDomainStats()
	c := metrics.NewDomainCollectorFunc(func() reclaim.DomainStats { return st })
	if err := testutil.CollectAndCompare(c, strings.NewReader(domainWant)); err != nil {
		t.Error(err)
	}
}

// TestDomainCollectorEveryField: changing any one DomainStats field but
// LastPanic changes the scrape; changing LastPanic does not (a message is
// not a metric).
func TestDomainCollectorEveryField(t *testing.T) {
	base := distinctDomainStats()
	bv := reflect.ValueOf(base)
	for i := range bv.NumField() {
		if bv.Field(i).IsZero() {
			t.Errorf("distinctDomainStats leaves %s zero: give it a value of its own", bv.Type().Field(i).Name)
		}
	}
	collect := func(st reclaim.DomainStats) map[string]float64 {
		return scrape(t, metrics.NewDomainCollectorFunc(func() reclaim.DomainStats { return st }))
	}
	want := collect(base)
	for i := range bv.NumField() {
		f := bv.Type().Field(i)
		st := base
		v := reflect.ValueOf(&st).Elem().Field(i)
		bump(t, "DomainStats."+f.Name, v)
		changed := !maps.Equal(collect(st), want)
		if wantChange := f.Name != "LastPanic"; changed != wantChange {
			t.Errorf("changing DomainStats.%s changes the scrape: %v, want %v", f.Name, changed, wantChange)
		}
	}
}

// TestDomainCollectorReal: a real domain with readers, a watched table,
// work run, a panic, work pending behind a lagging reader and a
// Synchronize waiting: each series is what Domain.Stats says.
func TestDomainCollectorReal(t *testing.T) {
	d := reclaim.NewDomain()
	tb, err := flowcache.New(flowcache.Config[int]{Name: "vnic0", Limit: 10, Domain: d})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	// Two functions run, one of them panicking; no reader yet, so
	// Synchronize runs them at once.
	d.Defer(func() { panic("boom") })
	d.Defer(func() {})
	d.Synchronize()
	// Two readers that never reach a quiescent point: work deferred now
	// stays pending, and a tick advances the epoch past them.
	r1, r2 := d.Register(), d.Register()
	d.Defer(func() {})
	reclaim.NewReclaimer(d, time.Hour).Tick()
	done := make(chan struct{})
	go func() { d.Synchronize(); close(done) }()
	for d.Stats().Synchronizing == 0 {
		time.Sleep(time.Millisecond)
	}
	defer func() {
		r1.Unregister()
		r2.Unregister()
		<-done
	}()

	before := d.Stats()
	got := scrape(t, metrics.NewDomainCollector(d))
	after := d.Stats()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"readers", before.Readers, 2},
		{"watched", before.Watched, 1},
		{"run", before.Run, uint64(2)},
		{"panics", before.Panics, uint64(1)},
		{"pending", before.Pending, 1},
		{"lagging", before.LagEpochs > 0, true},
		{"synchronizing", before.Synchronizing, 1},
	} {
		if c.got != c.want {
			t.Errorf("DomainStats %s = %v, want %v", c.name, c.got, c.want)
		}
	}
	want := map[string]float64{
		"flowcache_domain_readers":             float64(before.Readers),
		"flowcache_domain_epochs_total":        float64(before.Epoch),
		"flowcache_domain_lag_epochs":          float64(before.LagEpochs),
		"flowcache_domain_deferred_pending":    float64(before.Pending),
		"flowcache_domain_deferred_run_total":  float64(before.Run),
		"flowcache_domain_panics_total":        float64(before.Panics),
		"flowcache_domain_watched_passes":      float64(before.Watched),
		"flowcache_domain_synchronize_waiters": float64(before.Synchronizing),
		"flowcache_domain_readers_stalled":     float64(before.Stalled),
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	// The oldest pending function ages while we scrape: its age lies
	// between the two reads of Stats around the scrape.
	if lag := got["flowcache_domain_lag_seconds"]; lag < before.LagTime.Seconds() || lag > after.LagTime.Seconds() || lag == 0 {
		t.Errorf("flowcache_domain_lag_seconds = %v, want in [%v, %v] and > 0", lag, before.LagTime.Seconds(), after.LagTime.Seconds())
	}
	// Both readers hold the tick's epoch back, since the tick.
	if h := got["flowcache_domain_held_back_seconds"]; h < before.HeldBack.Seconds() || h > after.HeldBack.Seconds() || h == 0 {
		t.Errorf("flowcache_domain_held_back_seconds = %v, want in [%v, %v] and > 0", h, before.HeldBack.Seconds(), after.HeldBack.Seconds())
	}
	if len(got) != 11 {
		t.Errorf("%d series, want 11", len(got))
	}
}

// TestDomainCollectorDefault: a nil domain is reclaim.Default(), where
// tables without a Config.Domain register their passes.
func TestDomainCollectorDefault(t *testing.T) {
	const watched = "flowcache_domain_watched_passes"
	w0 := scrape(t, metrics.NewDomainCollector(nil))[watched]
	tb, err := flowcache.New(flowcache.Config[int]{Name: "default", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if w := scrape(t, metrics.NewDomainCollector(nil))[watched]; w != w0+1 {
		t.Errorf("watched passes of the default domain: %v with a new table, %v before", w, w0)
	}
}
