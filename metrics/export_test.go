package metrics

import (
	"github.com/flowcache/flowcache/reclaim"
	"github.com/prometheus/client_golang/prometheus"
)

// NewDomainCollectorFunc is NewDomainCollector over any DomainStats, so
// that a test can give every field a value a real domain would not hold
// still for.
func NewDomainCollectorFunc(stats func() reclaim.DomainStats) prometheus.Collector {
	return &domainCollector{stats: stats}
}
