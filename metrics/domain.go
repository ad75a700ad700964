package metrics

import (
	"github.com/flowcache/flowcache/reclaim"
	"github.com/prometheus/client_golang/prometheus"
)

// NewDomainCollector returns a prometheus.Collector over an epoch domain:
// its readers, its epoch and how far the slowest reader lags it, and the
// deferred work (OnRemove callbacks, retired arrays) waiting for a grace
// period. A nil d means reclaim.Default(), the domain of every table whose
// Config.Domain is nil.
//
// Its series have no labels. A program with several domains registers one
// collector for each through prometheus.WrapRegistererWith, with a label
// that tells them apart.
func NewDomainCollector(d *reclaim.Domain) prometheus.Collector {
	if d == nil {
		d = reclaim.Default()
	}
	return &domainCollector{stats: d.Stats}
}

type domainCollector struct {
	stats func() reclaim.DomainStats // Domain.Stats; a fake in tests
}

func (c *domainCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range domainMetrics {
		ch <- m.desc
	}
}

// Collect reads the domain's Stats once and sends every series of it.
func (c *domainCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, m := range domainMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(&st))
	}
}

type domainMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*reclaim.DomainStats) float64
}

func newDomainMetric(name, help string, typ prometheus.ValueType, value func(*reclaim.DomainStats) float64) domainMetric {
	return domainMetric{desc: prometheus.NewDesc(name, help, nil, nil), typ: typ, value: value}
}

// domainMetrics is every metric a domain collector exports. Every
// DomainStats field but LastPanic (a message, which belongs in a log, not
// in a label) appears in exactly one, which TestDomainCollectorEveryField
// checks.
var domainMetrics = []domainMetric{
	newDomainMetric("flowcache_domain_readers",
		"Registered readers (worker goroutines) that every grace period waits for.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return float64(s.Readers) }),
	// The global epoch only grows, by one per grace period started, so it
	// is a counter: rate() of it is grace periods per second.
	newDomainMetric("flowcache_domain_epochs_total",
		"The domain's global epoch: grace periods started since the domain was created.",
		prometheus.CounterValue, func(s *reclaim.DomainStats) float64 { return float64(s.Epoch) }),
	newDomainMetric("flowcache_domain_lag_epochs",
		"How many epochs the slowest reader is behind the global epoch.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return float64(s.LagEpochs) }),
	newDomainMetric("flowcache_domain_lag_seconds",
		"Age of the oldest deferred function still waiting for its grace period, 0 when none waits. Up to one Reclaimer period is normal; more means a reader is not reaching its quiescent points.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return s.LagTime.Seconds() }),
	newDomainMetric("flowcache_domain_deferred_pending",
		"Deferred functions (OnRemove callbacks, retired memory) waiting for their grace period.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return float64(s.Pending) }),
	newDomainMetric("flowcache_domain_deferred_run_total",
		"Deferred functions run after their grace period, those that panicked included.",
		prometheus.CounterValue, func(s *reclaim.DomainStats) float64 { return float64(s.Run) }),
	newDomainMetric("flowcache_domain_panics_total",
		"Deferred functions and watched passes that panicked; the domain recovered each one.",
		prometheus.CounterValue, func(s *reclaim.DomainStats) float64 { return float64(s.Panics) }),
	newDomainMetric("flowcache_domain_watched_passes",
		"Periodic passes registered with the domain (one per open table) that each Reclaimer tick runs.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return float64(s.Watched) }),
	newDomainMetric("flowcache_domain_held_back_seconds",
		"The longest any registered reader has held a grace period back right now: time since the epoch it has yet to report began. 0 when every reader is current.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return s.HeldBack.Seconds() }),
	newDomainMetric("flowcache_domain_readers_stalled",
		"Readers that have held a grace period back for more than 10 s (reclaim.StalledAfter): a worker that stopped calling Quiescent without unregistering, which stops every OnRemove on the domain.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return float64(s.Stalled) }),
	newDomainMetric("flowcache_domain_synchronize_waiters",
		"Synchronize calls waiting for a reader right now.",
		prometheus.GaugeValue, func(s *reclaim.DomainStats) float64 { return float64(s.Synchronizing) }),
}
