package metrics

import (
	"slices"
	"strings"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is what a Collector reads: anything with the Stats method of a
// flowcache.Table. Every *flowcache.Table[V] is a Source, whatever V, so
// one Collector can export tables of different value types.
type Source interface {
	Stats() flowcache.Stats
}

var _ Source = (*flowcache.Table[struct{}])(nil)

// Collector is a prometheus.Collector over a fixed set of tables. It keeps
// no state of its own: every Collect reads each table's Stats once and
// turns the snapshot into const metrics, labelled with the table's name.
type Collector struct {
	tables []Source
}

// NewCollector returns a Collector over tables. Each table's series carry
// its Stats.Name in the "table" label, so the tables given must have
// distinct names: two with one name make every scrape fail with an error
// that names the duplicate series (Prometheus' rule for any collector).
func NewCollector(tables ...Source) *Collector {
	return &Collector{tables: slices.Clone(tables)}
}

// Describe sends the descriptor of every family, so that a registry can
// check names and labels at registration (it is a "checked" collector).
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range tableFamilies {
		ch <- f.desc
	}
}

// Collect reads each table's Stats once and sends every series of it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.tables {
		st := t.Stats()
		// A label value must be UTF-8 or MustNewConstMetric panics; the
		// registry recovers, but fails the whole scrape, so one odd
		// Config.Name (whatever bytes the program passed) would hide
		// every table. Export it with replacement characters instead.
		name := strings.ToValidUTF8(st.Name, "\uFFFD")
		for _, f := range tableFamilies {
			for _, s := range f.series {
				if s.label == "" {
					ch <- prometheus.MustNewConstMetric(f.desc, f.typ, s.value(&st), name)
				} else {
					ch <- prometheus.MustNewConstMetric(f.desc, f.typ, s.value(&st), name, s.label)
				}
			}
		}
	}
}

// A family is one metric name: its descriptor, its type, and one series
// for each value of its second label (or one series when it has none).
type family struct {
	desc   *prometheus.Desc
	typ    prometheus.ValueType
	series []series
}

type series struct {
	label string // the second label's value; "" for a family without one
	value func(*flowcache.Stats) float64
}

// tableLabel names the table, from Stats.Name.
const tableLabel = "table"

func newFamily(name, help string, typ prometheus.ValueType, label string, ss ...series) family {
	labels := []string{tableLabel}
	if label != "" {
		labels = append(labels, label)
	}
	return family{desc: prometheus.NewDesc(name, help, labels, nil), typ: typ, series: ss}
}

func gauge(name, help string, value func(*flowcache.Stats) float64) family {
	return newFamily(name, help, prometheus.GaugeValue, "", series{value: value})
}

func counter(name, help string, value func(*flowcache.Stats) float64) family {
	return newFamily(name, help, prometheus.CounterValue, "", series{value: value})
}

// tableFamilies is every metric a Collector exports, in the order a scrape
// lists them. Each Stats field appears in exactly one series (Name as the
// label), which TestCollectorEveryField checks.
var tableFamilies = []family{
	gauge("flowcache_flows",
		"Flows stored in the table now; a flow stored under two keys (InsertPair) counts once.",
		func(s *flowcache.Stats) float64 { return float64(s.Live) }),
	gauge("flowcache_flows_limit",
		"Most flows the table holds (Config.Limit); at the limit an insert is refused or evicts a flow.",
		func(s *flowcache.Stats) float64 { return float64(s.Limit) }),
	gauge("flowcache_pairs",
		"Flows stored under two keys (InsertPair), counted in flowcache_flows.",
		func(s *flowcache.Stats) float64 { return float64(s.Pairs) }),
	gauge("flowcache_bytes",
		"Bytes the table holds: its bucket arrays and entries.",
		func(s *flowcache.Stats) float64 { return float64(s.Bytes) }),
	gauge("flowcache_slots",
		"Slot capacity of all the table's shards, overflow buckets not counted.",
		func(s *flowcache.Stats) float64 { return float64(s.Slots) }),
	gauge("flowcache_shards",
		"Shards the table is split into.",
		func(s *flowcache.Stats) float64 { return float64(s.Shards) }),
	newFamily("flowcache_lookups_total",
		"Lookups by result: each key of Get, GetBatch, GetOrInsert and GetOrInsertBatch is one hit or one miss. Hits are a sampled, unbiased estimate; misses are exact.",
		prometheus.CounterValue, "result",
		series{"hit", func(s *flowcache.Stats) float64 { return float64(s.Hits) }},
		series{"miss", func(s *flowcache.Stats) float64 { return float64(s.Misses) }}),
	counter("flowcache_inserts_total",
		"New flows stored (an insert that replaces a flow counts as a removal with cause replaced instead).",
		func(s *flowcache.Stats) float64 { return float64(s.Inserts) }),
	newFamily("flowcache_removals_total",
		"Flows that left the table, by cause: expired (idle for their timeout), removed (Remove), replaced (an insert of a key already present), evicted (to make room at the limit), cleared (Clear or Close).",
		prometheus.CounterValue, "cause",
		series{"expired", func(s *flowcache.Stats) float64 { return float64(s.Expired) }},
		series{"removed", func(s *flowcache.Stats) float64 { return float64(s.Removed) }},
		series{"replaced", func(s *flowcache.Stats) float64 { return float64(s.Replaced) }},
		series{"evicted", func(s *flowcache.Stats) float64 { return float64(s.Evicted) }},
		series{"cleared", func(s *flowcache.Stats) float64 { return float64(s.Cleared) }}),
	counter("flowcache_full_rejections_total",
		"Inserts refused because the table was at its limit (ErrFull).",
		func(s *flowcache.Stats) float64 { return float64(s.FullRejections) }),
	counter("flowcache_evictions_total",
		`Flows evicted at the limit to make room for a new one: the same count as flowcache_removals_total{cause="evicted"}, under its own name for alerts.`,
		func(s *flowcache.Stats) float64 { return float64(s.Evicted) }),
	newFamily("flowcache_rebuilds_total",
		"Shard rebuilds by kind: grow (past the load factor), shrink (left under a quarter full by a pass), flood (a probe chain past its bound, rebuilt with a fresh seed), compact (storage rebuilt densely), tidy (index rebuilt at its size to drop the overflow buckets churn left linked).",
		prometheus.CounterValue, "kind",
		series{"grow", func(s *flowcache.Stats) float64 { return float64(s.Grows) }},
		series{"shrink", func(s *flowcache.Stats) float64 { return float64(s.Shrinks) }},
		series{"flood", func(s *flowcache.Stats) float64 { return float64(s.Floods) }},
		series{"compact", func(s *flowcache.Stats) float64 { return float64(s.Compactions) }},
		series{"tidy", func(s *flowcache.Stats) float64 { return float64(s.Tidies) }}),
	newFamily("flowcache_records",
		"Record room in the storage chunks the table holds (held; a flow under two keys takes two records) and the records that hold a live flow's key (live). held stays within 2 × live + one chunk per shard.",
		prometheus.GaugeValue, "state",
		series{"held", func(s *flowcache.Stats) float64 { return float64(s.RecordsHeld) }},
		series{"live", func(s *flowcache.Stats) float64 { return float64(s.RecordsLive) }}),
	gauge("flowcache_pending_bytes",
		"Bytes waiting for a grace period to come back: chunks whose entries moved, until their fold, and the records of flows that left, until their OnRemove runs and their values are released.",
		func(s *flowcache.Stats) float64 { return float64(s.PendingBytes) }),
	counter("flowcache_evacuations_total",
		"Chunks of entries evacuated: their survivors moved to the shard's tail so the chunk's memory could go.",
		func(s *flowcache.Stats) float64 { return float64(s.Evacuations) }),
	counter("flowcache_moved_entries_total",
		"Entries moved to give memory back, by compactions and evacuations.",
		func(s *flowcache.Stats) float64 { return float64(s.Moved) }),
	counter("flowcache_passes_total",
		"Expiry passes run.",
		func(s *flowcache.Stats) float64 { return float64(s.Passes) }),
	counter("flowcache_released_bytes_total",
		"Bytes the table stopped holding because of expiry passes and Clear.",
		func(s *flowcache.Stats) float64 { return float64(s.Released) }),
	gauge("flowcache_longest_shard_hold_seconds",
		"Longest an expiry pass has held one shard's mutex: the longest an insert into that shard waited for a pass.",
		func(s *flowcache.Stats) float64 { return s.LongestHold.Seconds() }),
	gauge("flowcache_last_pass_timestamp_seconds",
		"Time of the last expiry pass, by the table's clock (Config.Clock), in seconds since the Unix epoch; 0 before the first.",
		func(s *flowcache.Stats) float64 {
			// The zero time.Time is year 1: a scrape before any pass
			// says 0, as Prometheus timestamps do for "never".
			if s.LastPass.IsZero() {
				return 0
			}
			// Unix and Nanosecond rather than UnixNano, which
			// overflows outside 1678-2262 (a test's or a
			// simulation's clock may be anywhere).
			return float64(s.LastPass.Unix()) + float64(s.LastPass.Nanosecond())/1e9
		}),
	gauge("flowcache_ttl_seconds",
		"Idle time after which a flow of the default timeout class expires.",
		func(s *flowcache.Stats) float64 { return s.TTL.Seconds() }),
}
