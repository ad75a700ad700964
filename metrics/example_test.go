package metrics_test

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/metrics"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Two tables of different value types, and their domain, on one registry,
// served as a /metrics handler. A program passes the handler to
// http.Handle; here one request is served to a recorder.
func ExampleNewCollector() {
	type nat struct{ Port uint16 }
	d := reclaim.NewDomain()
	vnic0, _ := flowcache.New(flowcache.Config[int]{Name: "vnic0", Limit: 1000, Domain: d})
	defer vnic0.Close()
	vnic1, _ := flowcache.New(flowcache.Config[nat]{Name: "vnic1", Limit: 500, Domain: d})
	defer vnic1.Close()

	k := flowcache.NewFlowKey(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.1"), 40000, 443, flowcache.ProtoTCP)
	vnic0.Insert(k, 1)
	vnic0.Get(k.Reverse()) // a miss

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(vnic0, vnic1), metrics.NewDomainCollector(d))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		for _, p := range []string{"flowcache_flows", "flowcache_inserts_total", `flowcache_lookups_total{result="miss"`, "flowcache_domain_watched_passes"} {
			if strings.HasPrefix(line, p) {
				fmt.Print(line)
			}
		}
	}
	// Output:
	// flowcache_domain_watched_passes 2
	// flowcache_flows{table="vnic0"} 1
	// flowcache_flows{table="vnic1"} 0
	// flowcache_flows_limit{table="vnic0"} 1000
	// flowcache_flows_limit{table="vnic1"} 500
	// flowcache_inserts_total{table="vnic0"} 1
	// flowcache_inserts_total{table="vnic1"} 0
	// flowcache_lookups_total{result="miss",table="vnic0"} 1
	// flowcache_lookups_total{result="miss",table="vnic1"} 0
}

// A program with two domains labels each one's series by wrapping the
// registerer: the collector's own series have no labels.
func ExampleNewDomainCollector() {
	fast, slow := reclaim.NewDomain(), reclaim.NewDomain()
	r := slow.Register() // a worker that has not reached a quiescent point
	defer r.Unregister()
	slow.Defer(func() {})

	reg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"domain": "fast"}, reg).MustRegister(metrics.NewDomainCollector(fast))
	prometheus.WrapRegistererWith(prometheus.Labels{"domain": "slow"}, reg).MustRegister(metrics.NewDomainCollector(slow))

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "flowcache_domain_deferred_pending" || mf.GetName() == "flowcache_domain_readers" {
			for _, m := range mf.GetMetric() {
				fmt.Println(mf.GetName(), m.GetLabel()[0].GetValue(), m.GetGauge().GetValue())
			}
		}
	}
	// Output:
	// flowcache_domain_deferred_pending fast 0
	// flowcache_domain_deferred_pending slow 1
	// flowcache_domain_readers fast 0
	// flowcache_domain_readers slow 1
}
