package metrics_test

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/metrics"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// fakeSource returns fixed Stats and counts the calls.
type fakeSource struct {
	st    flowcache.Stats
	calls int
}

func (f *fakeSource) Stats() flowcache.Stats { f.calls++; return f.st }

// distinctStats sets every field of Stats to its own value, so that a
// field exported under the wrong name, or not at all, shows.
func distinctStats() flowcache.Stats {
	return flowcache.Stats{
		Name:           "fake",
		Live:           1,
		Limit:          2,
		Shards:         3,
		Slots:          4,
		Bytes:          5,
		Hits:           6,
		Misses:         7,
		Inserts:        8,
		Replaced:       9,
		Removed:        10,
		Evicted:        11,
		Expired:        12,
		Cleared:        13,
		FullRejections: 14,
		Pairs:          15,
		Grows:          16,
		Shrinks:        17,
		Floods:         18,
		Compactions:    19,
		Moved:          20,
		Passes:         21,
		LastPass:       time.Unix(1_700_000_022, 500_000_000),
		LongestHold:    23 * time.Millisecond,
		Released:       24,
		TTL:            25 * time.Second,
		Evacuations:    26,
		Tidies:         27,
		RecordsHeld:    28,
		RecordsLive:    29,
		PendingBytes:   30,
	}
}

// fakeWant is the whole scrape of distinctStats, HELP and TYPE included:
// the names, types and help strings are the package's interface.
const fakeWant = `
# HELP flowcache_bytes Bytes the table holds: its bucket arrays and entries.
# TYPE flowcache_bytes gauge
flowcache_bytes{table="fake"} 5
# HELP flowcache_evictions_total Flows evicted at the limit to make room for a new one: the same count as flowcache_removals_total{cause="evicted"}, under its own name for alerts.
# TYPE flowcache_evictions_total counter
flowcache_evictions_total{table="fake"} 11
# HELP flowcache_flows Flows stored in the table now; a flow stored under two keys (InsertPair) counts once.
# TYPE flowcache_flows gauge
flowcache_flows{table="fake"} 1
# HELP flowcache_flows_limit Most flows the table holds (Config.Limit); at the limit an insert is refused or evicts a flow.
# TYPE flowcache_flows_limit gauge
flowcache_flows_limit{table="fake"} 2
# HELP flowcache_full_rejections_total Inserts refused because the table was at its limit (ErrFull).
# TYPE flowcache_full_rejections_total counter
flowcache_full_rejections_total{table="fake"} 14
# HELP flowcache_inserts_total New flows stored (an insert that replaces a flow counts as a removal with cause replaced instead).
# TYPE flowcache_inserts_total counter
flowcache_inserts_total{table="fake"} 8
# HELP flowcache_last_pass_timestamp_seconds Time of the last expiry pass, by the table's clock (Config.Clock), in seconds since the Unix epoch; 0 before the first.
# TYPE flowcache_last_pass_timestamp_seconds gauge
flowcache_last_pass_timestamp_seconds{table="fake"} 1.7000000225e+09
# HELP flowcache_longest_shard_hold_seconds Longest an expiry pass has held one shard's mutex: the longest an insert into that shard waited for a pass.
# TYPE flowcache_longest_shard_hold_seconds gauge
flowcache_longest_shard_hold_seconds{table="fake"} 0.023
# HELP flowcache_lookups_total Lookups by result: each key of Get, GetBatch, GetOrInsert and GetOrInsertBatch is one hit or one miss. Hits are a sampled, unbiased estimate; misses are exact.
# TYPE flowcache_lookups_total counter
flowcache_lookups_total{result="hit",table="fake"} 6
flowcache_lookups_total{result="miss",table="fake"} 7
# HELP flowcache_evacuations_total Chunks of entries evacuated: their survivors moved to the shard's tail so the chunk's memory could go.
# TYPE flowcache_evacuations_total counter
flowcache_evacuations_total{table="fake"} 26
# HELP flowcache_moved_entries_total Entries moved to give memory back, by compactions and evacuations.
# TYPE flowcache_moved_entries_total counter
flowcache_moved_entries_total{table="fake"} 20
# HELP flowcache_pairs Flows stored under two keys (InsertPair), counted in flowcache_flows.
# TYPE flowcache_pairs gauge
flowcache_pairs{table="fake"} 15
# HELP flowcache_passes_total Expiry passes run.
# TYPE flowcache_passes_total counter
flowcache_passes_total{table="fake"} 21
# HELP flowcache_pending_bytes Bytes waiting for a grace period to come back: chunks whose entries moved, until their fold, and the records of flows that left, until their OnRemove runs and their values are released.
# TYPE flowcache_pending_bytes gauge
flowcache_pending_bytes{table="fake"} 30
# HELP flowcache_rebuilds_total Shard rebuilds by kind: grow (past the load factor), shrink (left under a quarter full by a pass), flood (a probe chain past its bound, rebuilt with a fresh seed), compact (storage rebuilt densely), tidy (index rebuilt at its size to drop the overflow buckets churn left linked).
# TYPE flowcache_rebuilds_total counter
flowcache_rebuilds_total{kind="compact",table="fake"} 19
flowcache_rebuilds_total{kind="flood",table="fake"} 18
flowcache_rebuilds_total{kind="grow",table="fake"} 16
flowcache_rebuilds_total{kind="shrink",table="fake"} 17
flowcache_rebuilds_total{kind="tidy",table="fake"} 27
# HELP flowcache_records Record room in the storage chunks the table holds (held; a flow under two keys takes two records) and the records that hold a live flow's key (live). held stays within 2 × live + one chunk per shard.
# TYPE flowcache_records gauge
flowcache_records{state="held",table="fake"} 28
flowcache_records{state="live",table="fake"} 29
# HELP flowcache_released_bytes_total Bytes the table stopped holding because of expiry passes and Clear.
# TYPE flowcache_released_bytes_total counter
flowcache_released_bytes_total{table="fake"} 24
# HELP flowcache_removals_total Flows that left the table, by cause: expired (idle for their timeout), removed (Remove), replaced (an insert of a key already present), evicted (to make room at the limit), cleared (Clear or Close).
# TYPE flowcache_removals_total counter
flowcache_removals_total{cause="cleared",table="fake"} 13
flowcache_removals_total{cause="evicted",table="fake"} 11
flowcache_removals_total{cause="expired",table="fake"} 12
flowcache_removals_total{cause="removed",table="fake"} 10
flowcache_removals_total{cause="replaced",table="fake"} 9
# HELP flowcache_shards Shards the table is split into.
# TYPE flowcache_shards gauge
flowcache_shards{table="fake"} 3
# HELP flowcache_slots Slot capacity of all the table's shards, overflow buckets not counted.
# TYPE flowcache_slots gauge
flowcache_slots{table="fake"} 4
# HELP flowcache_ttl_seconds Idle time after which a flow of the default timeout class expires.
# TYPE flowcache_ttl_seconds gauge
flowcache_ttl_seconds{table="fake"} 25
`

// TestCollectorFake: every Stats field, each a distinct value, lands in
// its series exactly. This is what keeps the exporter honest while the
// table's counters are being filled in: it checks the mapping, not the
// table.
func TestCollectorFake(t *testing.T) {
	src := &fakeSource{st: distinctStats()}
	if err := testutil.CollectAndCompare(metrics.NewCollector(src), strings.NewReader(fakeWant)); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(metrics.NewCollector(src)); n != 31 {
		t.Errorf("%d series, want 31", n)
	}
}

// TestCollectorEveryField: changing any one Stats field changes the
// scrape, so no field is left out. A field added to Stats fails here
// until the fake sets it and a series exports it.
func TestCollectorEveryField(t *testing.T) {
	base := distinctStats()
	bv := reflect.ValueOf(base)
	for i := range bv.NumField() {
		if bv.Field(i).IsZero() {
			t.Errorf("distinctStats leaves %s zero: give it a value of its own", bv.Type().Field(i).Name)
		}
	}
	want := scrape(t, metrics.NewCollector(&fakeSource{st: base}))
	for i := range bv.NumField() {
		f := bv.Type().Field(i)
		st := base
		v := reflect.ValueOf(&st).Elem().Field(i)
		bump(t, "Stats."+f.Name, v)
		if got := scrape(t, metrics.NewCollector(&fakeSource{st: st})); maps.Equal(got, want) {
			t.Errorf("changing Stats.%s does not change the scrape", f.Name)
		}
	}
}

// TestCollectorZero: a table that has done nothing exports 0 everywhere,
// the time of the last pass included (not year 1 in Unix seconds).
func TestCollectorZero(t *testing.T) {
	got := scrape(t, metrics.NewCollector(&fakeSource{st: flowcache.Stats{Name: "idle"}}))
	if len(got) != 31 {
		t.Errorf("%d series, want 31", len(got))
	}
	for name, v := range got {
		if v != 0 {
			t.Errorf("%s = %v, want 0", name, v)
		}
	}
}

// TestCollectorOneStatsPerScrape: a scrape reads each table's Stats once,
// and nothing reads it between scrapes.
func TestCollectorOneStatsPerScrape(t *testing.T) {
	a, b := &fakeSource{st: flowcache.Stats{Name: "a"}}, &fakeSource{st: flowcache.Stats{Name: "b"}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewCollector(a, b))
	if a.calls != 0 || b.calls != 0 {
		t.Errorf("registering read Stats: %d, %d calls", a.calls, b.calls)
	}
	for i := 1; i <= 3; i++ {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
		if a.calls != i || b.calls != i {
			t.Errorf("after %d scrapes: %d and %d Stats calls", i, a.calls, b.calls)
		}
	}
}

// TestCollectorNames: the table label is each table's name; a name that
// is not UTF-8 is exported with replacement characters instead of failing
// the scrape; two tables with one name make the scrape fail.
func TestCollectorNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tables  []string
		want    []string // the table label values a scrape shows
		wantErr string
	}{
		{"two", []string{"vnic0", "vnic1"}, []string{"vnic0", "vnic1"}, ""},
		{"empty-name", []string{""}, []string{""}, ""},
		{"not-utf8", []string{"bad\xff"}, []string{"bad\uFFFD"}, ""},
		{"duplicate", []string{"vnic0", "vnic0"}, nil, "was collected before with the same name and label values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srcs []metrics.Source
			for _, n := range tc.tables {
				srcs = append(srcs, &fakeSource{st: flowcache.Stats{Name: n}})
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(metrics.NewCollector(srcs...))
			mfs, err := reg.Gather()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Gather: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			labels := map[string]bool{}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						if lp.GetName() == "table" {
							labels[lp.GetValue()] = true
						}
					}
				}
			}
			if got := slices.Sorted(maps.Keys(labels)); !slices.Equal(got, tc.want) {
				t.Errorf("table labels %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCollectorLint: promlint finds nothing to say about either
// collector, over a fake table and a real one.
func TestCollectorLint(t *testing.T) {
	tb, err := flowcache.New(flowcache.Config[int]{Name: "vnic0", Limit: 10, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for name, c := range map[string]prometheus.Collector{
		"tables": metrics.NewCollector(&fakeSource{st: distinctStats()}, tb),
		"domain": metrics.NewDomainCollector(reclaim.NewDomain()),
	} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: promlint: %s: %s", name, p.Metric, p.Text)
		}
	}
}

// TestCollectorTables: over two real tables of different value types,
// after a known sequence of operations, each series is what the table's
// Stats says, and Stats says what the operations did.
func TestCollectorTables(t *testing.T) {
	d := reclaim.NewDomain()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return start }
	type conn struct {
		NATPort uint16
		Policy  string
	}
	a, err := flowcache.New(flowcache.Config[int]{Name: "vnic0", Limit: 4, Shards: 2, TTL: 30 * time.Second, Clock: clock, Domain: d})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := flowcache.New(flowcache.Config[conn]{Name: "vnic1", Limit: 100, Shards: 4, Clock: clock, Domain: d})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	key := func(i int) flowcache.FlowKey {
		return flowcache.NewFlowKey(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), netip.MustParseAddr("192.0.2.1"), uint16(1000+i), 443, flowcache.ProtoTCP)
	}
	// a: 4 inserts fill it, a fifth is refused, one replaces, 6400 hits,
	// 3 misses, 1 remove; then a pass 31 s later expires the other 3.
	for i := range 4 {
		if _, err := a.Insert(key(i), i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Insert(key(4), 4); err == nil {
		t.Fatal("fifth insert into a table of 4 succeeded")
	}
	if _, err := a.Insert(key(0), 100); err != nil {
		t.Fatal(err)
	}
	// Hits are sampled (one lookup in 64 counts 64), so enough of them
	// that the estimate is surely not 0.
	const hits = 64 * 100
	for i := range hits {
		a.Get(key(i % 3))
	}
	for i := 10; i < 13; i++ {
		a.Get(key(i))
	}
	a.Remove(key(3))
	passAt := start.Add(31 * time.Second)
	res := a.Expire(passAt)

	// b: 50 inserts, 20 misses, a Clear.
	for i := range 50 {
		if _, err := b.Insert(key(i), conn{NATPort: uint16(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 100; i < 120; i++ {
		b.Get(key(i))
	}
	b.Clear()
	d.Synchronize()

	sa, sb := a.Stats(), b.Stats()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"a live", sa.Live, 0},
		{"a limit", sa.Limit, 4},
		{"a shards", sa.Shards, 2},
		{"a inserts", sa.Inserts, uint64(5)}, // every flow stored, the replacing one too
		{"a replaced", sa.Replaced, uint64(1)},
		{"a full", sa.FullRejections, uint64(1)},
		{"a misses", sa.Misses, uint64(3)},
		{"a hits counted", sa.Hits > 0, true},
		{"a removed", sa.Removed, uint64(1)},
		{"a cleared", sa.Cleared, uint64(0)},
		{"a expired", sa.Expired, uint64(3)},
		{"a expired by the pass", res.Expired, 3},
		{"a passes", sa.Passes, uint64(1)},
		{"a last pass", sa.LastPass.Equal(passAt), true},
		{"a ttl", sa.TTL, 30 * time.Second},
		{"b live", sb.Live, 0},
		{"b inserts", sb.Inserts, uint64(50)},
		{"b misses", sb.Misses, uint64(20)},
		{"b removed", sb.Removed, uint64(0)},
		{"b cleared", sb.Cleared, uint64(50)},
		{"b passes", sb.Passes, uint64(0)},
		{"b ttl", sb.TTL, flowcache.DefaultTTL},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	got := scrape(t, metrics.NewCollector(a, b))
	want := map[string]float64{}
	maps.Copy(want, wantSeries(sa))
	maps.Copy(want, wantSeries(sb))
	if len(got) != len(want) {
		t.Errorf("%d series, want %d", len(got), len(want))
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, want[k])
		}
	}
	if testing.Verbose() {
		t.Log(scrapeText(t, metrics.NewCollector(a, b)))
	}
}

// wantSeries is the series a table with st should export, written out
// independently of the package's table of families.
func wantSeries(st flowcache.Stats) map[string]float64 {
	n := st.Name
	s := func(name string, v float64, label ...string) (string, float64) {
		ls := fmt.Sprintf(`table=%q`, n)
		if len(label) == 2 {
			ls = fmt.Sprintf(`%s=%q,%s`, label[0], label[1], ls)
		}
		return name + "{" + ls + "}", v
	}
	m := map[string]float64{}
	add := func(k string, v float64) { m[k] = v }
	add(s("flowcache_flows", float64(st.Live)))
	add(s("flowcache_flows_limit", float64(st.Limit)))
	add(s("flowcache_pairs", float64(st.Pairs)))
	add(s("flowcache_bytes", float64(st.Bytes)))
	add(s("flowcache_slots", float64(st.Slots)))
	add(s("flowcache_shards", float64(st.Shards)))
	add(s("flowcache_lookups_total", float64(st.Hits), "result", "hit"))
	add(s("flowcache_lookups_total", float64(st.Misses), "result", "miss"))
	add(s("flowcache_inserts_total", float64(st.Inserts)))
	add(s("flowcache_removals_total", float64(st.Expired), "cause", "expired"))
	add(s("flowcache_removals_total", float64(st.Removed), "cause", "removed"))
	add(s("flowcache_removals_total", float64(st.Replaced), "cause", "replaced"))
	add(s("flowcache_removals_total", float64(st.Evicted), "cause", "evicted"))
	add(s("flowcache_removals_total", float64(st.Cleared), "cause", "cleared"))
	add(s("flowcache_full_rejections_total", float64(st.FullRejections)))
	add(s("flowcache_evictions_total", float64(st.Evicted)))
	add(s("flowcache_rebuilds_total", float64(st.Grows), "kind", "grow"))
	add(s("flowcache_rebuilds_total", float64(st.Shrinks), "kind", "shrink"))
	add(s("flowcache_rebuilds_total", float64(st.Floods), "kind", "flood"))
	add(s("flowcache_rebuilds_total", float64(st.Compactions), "kind", "compact"))
	add(s("flowcache_rebuilds_total", float64(st.Tidies), "kind", "tidy"))
	add(s("flowcache_records", float64(st.RecordsHeld), "state", "held"))
	add(s("flowcache_records", float64(st.RecordsLive), "state", "live"))
	add(s("flowcache_pending_bytes", float64(st.PendingBytes)))
	add(s("flowcache_evacuations_total", float64(st.Evacuations)))
	add(s("flowcache_moved_entries_total", float64(st.Moved)))
	add(s("flowcache_passes_total", float64(st.Passes)))
	add(s("flowcache_released_bytes_total", float64(st.Released)))
	add(s("flowcache_longest_shard_hold_seconds", st.LongestHold.Seconds()))
	lp := 0.0
	if !st.LastPass.IsZero() {
		lp = float64(st.LastPass.Unix()) + float64(st.LastPass.Nanosecond())/1e9
	}
	add(s("flowcache_last_pass_timestamp_seconds", lp))
	add(s("flowcache_ttl_seconds", st.TTL.Seconds()))
	return m
}

// scrape collects c through a pedantic registry (which checks that
// Collect matches Describe) and returns each series' value by
// name{labels}, labels sorted by name.
func scrape(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			k := mf.GetName()
			if len(ls) > 0 {
				k += "{" + strings.Join(ls, ",") + "}"
			}
			var v float64
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s is a %v", k, mf.GetType())
			}
			if _, dup := out[k]; dup {
				t.Fatalf("%s twice", k)
			}
			out[k] = v
		}
	}
	return out
}

// scrapeText is the text exposition of c. (testutil.CollectAndFormat
// would do, but in client_golang v1.25.0 it keeps only the families it is
// given by name, and none when given no name.)
func scrapeText(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestNoPrometheusInFlowcache: only a program that imports metrics links
// client_golang; flowcache and its own dependencies do not.
func TestNoPrometheusInFlowcache(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	for _, pkg := range []string{"github.com/flowcache/flowcache/flowcache", "github.com/flowcache/flowcache/reclaim"} {
		out, err := exec.Command(goTool, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		if bytes.Contains(out, []byte("prometheus")) {
			t.Errorf("%s depends on Prometheus:\n%s", pkg, out)
		}
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/flowcache/flowcache/metrics").Output()
	if err != nil || !bytes.Contains(out, []byte("github.com/prometheus/client_golang/prometheus\n")) {
		t.Errorf("metrics does not list client_golang among its dependencies (%v): the check above checks nothing", err)
	}
}

// bump changes a struct field of any of the kinds Stats and DomainStats
// hold, so that a test can see whether the scrape follows it.
func bump(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Second)))
	case v.Type() == reflect.TypeFor[time.Duration]():
		v.SetInt(v.Int() + int64(time.Millisecond))
	case v.CanInt():
		v.SetInt(v.Int() + 1000)
	case v.CanUint():
		v.SetUint(v.Uint() + 1000)
	case v.Kind() == reflect.String:
		v.SetString(v.String() + "x")
	default:
		t.Fatalf("%s is a %v: teach bump to change it", name, v.Type())
	}
}
