// Package replication exports replication publishers and followers
// (package replicate) to Prometheus. It is apart from package metrics so
// that a program that exports only its tables links neither NATS nor
// replicate.
//
// Series, each with the labels "name" (the replication's name) and "role"
// (publisher or follower):
//
//	flowcache_replication_epoch                      gauge
//	flowcache_replication_published_total            counter
//	flowcache_replication_coalesced_total            counter
//	flowcache_replication_filtered_total             counter
//	flowcache_replication_dropped_total              counter
//	flowcache_replication_resyncs_total              counter
//	flowcache_replication_wire_bytes_total           counter
//	flowcache_replication_flushes_total              counter
//	flowcache_replication_applied_total              counter
//	flowcache_replication_refused_total{reason}      counter: stale, fenced, invalid
//	flowcache_replication_flows                      gauge (follower)
//	flowcache_replication_lag_p50_seconds            gauge (follower)
//	flowcache_replication_lag_p99_seconds            gauge (follower)
//	flowcache_replication_caught_up                  gauge, 0 or 1 (follower)
package replication

import (
	"github.com/flowcache/flowcache/replicate"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is a replicate.Publisher or replicate.Follower, of any value
// type.
type Source interface {
	Stats() replicate.Stats
}

// Collector is a prometheus.Collector over publishers and followers. It
// keeps no state: each Collect reads every source's Stats once.
type Collector struct{ sources []Source }

// NewCollector returns a Collector over sources.
func NewCollector(sources ...Source) *Collector {
	return &Collector{sources: append([]Source(nil), sources...)}
}

type metric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	label string // the extra label's value, if the family has one
	value func(*replicate.Stats) float64
}

func newDesc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc("flowcache_replication_"+name, help, append([]string{"name", "role"}, extra...), nil)
}

var (
	refused = newDesc("refused_total", "Records a follower refused, by reason: stale (a duplicate or older than what it holds), fenced (an older epoch), invalid (did not decode or apply).", "reason")

	metrics = []metric{
		{newDesc("epoch", "The publisher's epoch; the newest a follower has seen."), prometheus.GaugeValue, "", func(s *replicate.Stats) float64 { return float64(s.Epoch) }},
		{newDesc("published_total", "Records a publisher sent: flows, tombstones, resync markers."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Published) }},
		{newDesc("coalesced_total", "Changes a publisher folded into a later change of the same flow."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Coalesced) }},
		{newDesc("filtered_total", "Flows a publisher's filter kept off the stream."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Filtered) }},
		{newDesc("dropped_total", "Changes a publisher lost to a full queue or a failed publish; each schedules a resync."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Dropped) }},
		{newDesc("resyncs_total", "Times a publisher sent every flow again."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Resyncs) }},
		{newDesc("wire_bytes_total", "Bytes a publisher sent, subjects and records."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.WireBytes) }},
		{newDesc("flushes_total", "Flushes a publisher completed, acknowledgements in or given up on."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Flushes) }},
		{newDesc("applied_total", "Records a follower applied."), prometheus.CounterValue, "", func(s *replicate.Stats) float64 { return float64(s.Applied) }},
		{refused, prometheus.CounterValue, "stale", func(s *replicate.Stats) float64 { return float64(s.Stale) }},
		{refused, prometheus.CounterValue, "fenced", func(s *replicate.Stats) float64 { return float64(s.Fenced) }},
		{refused, prometheus.CounterValue, "invalid", func(s *replicate.Stats) float64 { return float64(s.Invalid) }},
		{newDesc("flows", "Flows a follower holds."), prometheus.GaugeValue, "", func(s *replicate.Stats) float64 { return float64(s.Flows) }},
		{newDesc("lag_p50_seconds", "Median time from the stream's store to a follower's apply, over its last 4096 records."), prometheus.GaugeValue, "", func(s *replicate.Stats) float64 { return s.LagP50.Seconds() }},
		{newDesc("lag_p99_seconds", "99th percentile of the time from the stream's store to a follower's apply, over its last 4096 records."), prometheus.GaugeValue, "", func(s *replicate.Stats) float64 { return s.LagP99.Seconds() }},
		{newDesc("caught_up", "1 once a follower has caught up with the stream."), prometheus.GaugeValue, "", func(s *replicate.Stats) float64 {
			if s.CaughtUp {
				return 1
			}
			return 0
		}},
	}
)

// Describe sends every family's descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	seen := map[*prometheus.Desc]bool{}
	for _, m := range metrics {
		if !seen[m.desc] {
			seen[m.desc] = true
			ch <- m.desc
		}
	}
}

// Collect reads each source's Stats once and sends every series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, src := range c.sources {
		st := src.Stats()
		for _, m := range metrics {
			labels := []string{st.Name, st.Role}
			if m.label != "" {
				labels = append(labels, m.label)
			}
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(&st), labels...)
		}
	}
}
