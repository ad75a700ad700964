package replication

import (
	"strings"
	"testing"
	"time"

	"github.com/flowcache/flowcache/replicate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fake replicate.Stats

func (f *fake) Stats() replicate.Stats { return replicate.Stats(*f) }

// TestCollector: every figure of Stats reaches its series, and the
// families pass promlint.
func TestCollector(t *testing.T) {
	pub := &fake{Role: "publisher", Name: "port1", Epoch: 3, Published: 10, Coalesced: 4, Filtered: 2, Dropped: 1, Resyncs: 2, WireBytes: 900, Flushes: 12}
	fol := &fake{Role: "follower", Name: "port1", Epoch: 3, Applied: 8, Stale: 5, Fenced: 6, Invalid: 7, Flows: 9,
		LagP50: 20 * time.Millisecond, LagP99: 120 * time.Millisecond, CaughtUp: true}
	c := NewCollector(pub, fol)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	want := `
# HELP flowcache_replication_refused_total Records a follower refused, by reason: stale (a duplicate or older than what it holds), fenced (an older epoch), invalid (did not decode or apply).
# TYPE flowcache_replication_refused_total counter
flowcache_replication_refused_total{name="port1",reason="fenced",role="follower"} 6
flowcache_replication_refused_total{name="port1",reason="invalid",role="follower"} 7
flowcache_replication_refused_total{name="port1",reason="stale",role="follower"} 5
flowcache_replication_refused_total{name="port1",reason="fenced",role="publisher"} 0
flowcache_replication_refused_total{name="port1",reason="invalid",role="publisher"} 0
flowcache_replication_refused_total{name="port1",reason="stale",role="publisher"} 0
# HELP flowcache_replication_lag_p99_seconds 99th percentile of the time from the stream's store to a follower's apply, over its last 4096 records.
# TYPE flowcache_replication_lag_p99_seconds gauge
flowcache_replication_lag_p99_seconds{name="port1",role="follower"} 0.12
flowcache_replication_lag_p99_seconds{name="port1",role="publisher"} 0
# HELP flowcache_replication_dropped_total Changes a publisher lost to a full queue or a failed publish; each schedules a resync.
# TYPE flowcache_replication_dropped_total counter
flowcache_replication_dropped_total{name="port1",role="follower"} 0
flowcache_replication_dropped_total{name="port1",role="publisher"} 1
# HELP flowcache_replication_flushes_total Flushes a publisher completed, acknowledgements in or given up on.
# TYPE flowcache_replication_flushes_total counter
flowcache_replication_flushes_total{name="port1",role="follower"} 0
flowcache_replication_flushes_total{name="port1",role="publisher"} 12
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flowcache_replication_refused_total", "flowcache_replication_lag_p99_seconds", "flowcache_replication_dropped_total", "flowcache_replication_flushes_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c); n != 2*16 {
		t.Errorf("%d series, want 32", n)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) != 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	// The next scrape reads the sources again.
	pub.Published = 11
	want = `
# HELP flowcache_replication_published_total Records a publisher sent: flows, tombstones, resync markers.
# TYPE flowcache_replication_published_total counter
flowcache_replication_published_total{name="port1",role="follower"} 0
flowcache_replication_published_total{name="port1",role="publisher"} 11
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flowcache_replication_published_total"); err != nil {
		t.Error(err)
	}
}
