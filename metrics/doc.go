// Package metrics exports flowcache tables and epoch domains to
// Prometheus (github.com/prometheus/client_golang).
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.NewCollector(vnic0, vnic1), metrics.NewDomainCollector(nil))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// # What is exported
//
// NewCollector(tables...) is a prometheus.Collector over any number of
// tables, of any value types: a Source is anything with
// Stats() flowcache.Stats, which every *flowcache.Table[V] has. Every
// series carries a "table" label, the table's Stats.Name (Config.Name), so
// the tables of one collector need distinct names. Families that split one
// count have a second label:
//
//	flowcache_flows{table}                       gauge    Stats.Live
//	flowcache_flows_limit{table}                 gauge    Stats.Limit
//	flowcache_pairs{table}                       gauge    Stats.Pairs
//	flowcache_bytes{table}                       gauge    Stats.Bytes
//	flowcache_slots{table}                       gauge    Stats.Slots
//	flowcache_shards{table}                      gauge    Stats.Shards
//	flowcache_lookups_total{table,result}        counter  hit: Hits, miss: Misses
//	flowcache_inserts_total{table}               counter  Stats.Inserts
//	flowcache_removals_total{table,cause}        counter  expired, removed, replaced, evicted, cleared
//	flowcache_full_rejections_total{table}       counter  Stats.FullRejections
//	flowcache_evictions_total{table}             counter  Stats.Evicted
//	flowcache_rebuilds_total{table,kind}         counter  grow, shrink, flood, compact
//	flowcache_evacuations_total{table}           counter  Stats.Evacuations
//	flowcache_moved_entries_total{table}         counter  Stats.Moved
//	flowcache_passes_total{table}                counter  Stats.Passes
//	flowcache_released_bytes_total{table}        counter  Stats.Released
//	flowcache_longest_shard_hold_seconds{table}  gauge    Stats.LongestHold
//	flowcache_last_pass_timestamp_seconds{table} gauge    Stats.LastPass (0 before the first pass)
//	flowcache_ttl_seconds{table}                 gauge    Stats.TTL
//
// A label splits a count only where the parts add up to something an
// operator asks for: sum(flowcache_removals_total) is every flow that left,
// and a replaced flow is one of them (an insert of a present key stores a
// new flow and retires the old one: the new flow counts in
// flowcache_inserts_total, the old one in removals{cause="replaced"}), so
// flowcache_flows = flowcache_inserts_total − sum(flowcache_removals_total)
// between operations. flowcache_evictions_total repeats
// flowcache_removals_total{cause="evicted"}: evictions are how a table at
// its limit makes room, the one removal an operator alerts on, and promlint
// accepts the second name. Do not add it to the sum of removals.
//
// NewDomainCollector(d) exports a reclaim.Domain, without labels: readers,
// the epoch (flowcache_domain_epochs_total, a counter because the epoch
// only grows), the slowest reader's lag in epochs and the age of the
// oldest pending deferred function in seconds, how long the slowest
// reader has held a grace period back and how many readers have held one
// back past reclaim.StalledAfter (a leaked or blocked Reader: alert on
// flowcache_domain_readers_stalled > 0), the deferred functions pending
// and run, the recovered panics, the watched passes and the Synchronize
// calls waiting. DomainStats.LastPanic, a message, is not
// exported: it belongs in a log. A program with several domains wraps its
// registerer with prometheus.WrapRegistererWith to label each one.
//
// Every name follows the Prometheus conventions (base units, _total on
// counters, snake case) and passes promlint; the tests check both
// collectors with testutil.CollectAndLint.
//
// # Why a collector
//
// The table already counts everything, for Stats, on its own terms:
// striped counters, per-shard counts, atomics the lookup path was designed
// around (invariant 10 in docs/DESIGN.md). Mirroring them into
// prometheus.Counter values would add a second set of shared writes on
// every packet, or a goroutine to copy them over. A Collector instead
// reads Stats at scrape time: one Stats call per table per scrape, turned
// into const metrics (prometheus.MustNewConstMetric), and nothing at all
// between scrapes. The data path neither knows nor pays for it.
//
// Counters read this way are each exact but not a single instant's (see
// flowcache.Stats): a scrape during heavy traffic may see an insert before
// the lookup that caused it. Each counter only grows, which is what
// Prometheus' rate() needs.
//
// Only programs that import this package link client_golang: flowcache
// itself depends on nothing of Prometheus (a test checks its dependency
// list).
package metrics
