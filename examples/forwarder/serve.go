package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/metrics"
	replmetrics "github.com/flowcache/flowcache/metrics/replication"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves /metrics on addr (-metrics): the table's series
// (metrics.NewCollector: flowcache_flows, flowcache_evictions_total,
// flowcache_removals_total{cause}, ...), its epoch domain's
// (flowcache_domain_*), with -replicate or -standby the replication's
// (flowcache_replication_*), and the Go runtime's and the process's (go_*,
// process_*: heap in use, GC pauses, CPU, open files). A registry of its
// own rather than prometheus' default one, so that nothing else a package
// registers there shows up unasked. It listens before it returns, so a
// bad address fails the start; the server runs until Close. It returns
// the address it listens on (addr with port 0 picks one).
func serveMetrics(addr string, table *flowcache.Table[Flow], domain *reclaim.Domain, repl *replication) (*http.Server, string, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		metrics.NewCollector(table),
		metrics.NewDomainCollector(domain),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if repl != nil {
		// The follower's figures, then the publisher's once promoted.
		reg.MustRegister(replmetrics.NewCollector(repl))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		// Serve returns ErrServerClosed after Close; anything else
		// (the listener failed) leaves the forwarder running without
		// metrics, which a scraper will notice.
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "forwarder: metrics:", err)
		}
	}()
	return srv, ln.Addr().String(), nil
}
