package replicate

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The replication's figures (docs/PERFORMANCE.md), each against an
// in-process JetStream server on loopback, its file store on a temporary
// directory: the server shares the process, and so the machine's cores,
// with the publisher, the follower and the table.

// benchTable is a table of limit flows on the real clock, with the
// default timeout (60 s: a publisher refreshes every 20 s) and no
// Reclaimer: nothing moves or expires flows under a benchmark.
func benchTable(b testing.TB, limit int) *flowcache.Table[Flow] {
	b.Helper()
	t, err := flowcache.New(flowcache.Config[Flow]{Limit: limit, Domain: reclaim.NewDomain()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.Close() })
	return t
}

// fillBench stores n flows, a quarter of them pairs, and returns their
// entries (valid for the benchmark: no pass runs, nothing is inserted).
func fillBench(b testing.TB, t *flowcache.Table[Flow], n int) []*flowcache.Entry[Flow] {
	b.Helper()
	es := make([]*flowcache.Entry[Flow], n)
	for i := range n {
		var err error
		if i%4 == 0 {
			es[i], err = t.InsertPair(key(i), key(i).Reverse(), Flow{Port: uint16(i), Mark: uint32(i)})
		} else {
			es[i], err = t.Insert(key(i), Flow{Port: uint16(i), Mark: uint32(i)})
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	return es
}

// benchServer is where a benchmark's replication goes: an in-process
// JetStream server, or, with REPLICATE_BENCH_NATS=nats://HOST:PORT set,
// a server of the caller's in another process (cmd/jetstream in
// examples/forwarder), so that the process's CPU time is the publisher's
// and the follower's alone. Each benchmark's replication has a name of
// its own there, deleted after it.
type benchServer struct {
	url  string
	name string
}

func newBenchServer(b testing.TB) *benchServer {
	b.Helper()
	if url := os.Getenv("REPLICATE_BENCH_NATS"); url != "" {
		s := &benchServer{url: url, name: fmt.Sprintf("bench%d", time.Now().UnixNano())}
		b.Cleanup(func() {
			js := s.connect(b)
			ctx := context.Background()
			js.DeleteStream(ctx, streamName(s.name))
			js.DeleteKeyValue(ctx, leaseBucket(s.name))
			js.DeleteKeyValue(ctx, epochBucket(s.name))
		})
		return s
	}
	return &benchServer{url: startBroker(b).url(), name: "t"}
}

func (s *benchServer) connect(b testing.TB) jetstream.JetStream {
	b.Helper()
	nc, err := nats.Connect(s.url, nats.MaxReconnects(-1))
	if err != nil {
		b.Fatal(err)
	}
	return jsOf(b, nc)
}

func (s *benchServer) pubConfig() PublisherConfig[Flow] {
	cfg := pubConfig()
	cfg.Name = s.name
	return cfg
}

func benchPublisher(b testing.TB, br *benchServer, t *flowcache.Table[Flow], cfg PublisherConfig[Flow]) *Publisher[Flow] {
	b.Helper()
	p, err := NewPublisher(ctxFor(b), br.connect(b), t, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := p.Flush(ctxFor(b)); err != nil { // the first resync
		b.Fatal(err)
	}
	return p
}

func benchFollower(b testing.TB, br *benchServer, t *flowcache.Table[Flow]) *Follower[Flow] {
	b.Helper()
	cfg := folConfig()
	cfg.Name = br.name
	f, err := NewFollower(ctxFor(b), br.connect(b), t, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	await(b, "the follower catches up", f.CaughtUp(), func() any { return f.Stats() })
	return f
}

// cpuTime is the CPU time (user + system) the process has used: the
// table's goroutines, the publisher's, the follower's and the server's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPublish: changes a publisher sends per second, from its one
// flusher goroutine. Each op is 10,000 state changes and a flush that
// waits for the stream's acknowledgements. mode=raw: every change is on
// another flow, so each is a record; mode=coalesced: ten changes on each
// of 1,000 flows between two flushes, one record per flow. Reported:
// changes/s (wall clock), records/s, and changes per CPU second of the
// whole process (the server in it included).
func BenchmarkPublish(b *testing.B) {
	const flows, batch = 50_000, 10_000
	for _, mode := range []struct {
		name string
		per  int // changes per flow per flush
	}{{"raw", 1}, {"coalesced", 10}} {
		b.Run("mode="+mode.name, func(b *testing.B) {
			br := newBenchServer(b)
			t := benchTable(b, flows)
			es := fillBench(b, t, flows)
			cfg := br.pubConfig()
			cfg.Interval, cfg.Refresh, cfg.Queue = time.Hour, time.Hour, 1<<20
			p := benchPublisher(b, br, t, cfg)
			ctx := ctxFor(b)
			st0, cpu0 := p.Stats(), cpuTime()
			next, changes := 0, 0
			for b.Loop() {
				for range batch / mode.per {
					e := es[next%flows]
					next++
					for range mode.per {
						s := e.State()
						e.CompareAndSwapState(s, s+1)
					}
				}
				if err := p.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				changes += batch
			}
			el, cpu, st := b.Elapsed(), cpuTime()-cpu0, p.Stats()
			if st.Dropped != st0.Dropped || st.Resyncs != st0.Resyncs {
				b.Fatalf("drops or resyncs while measuring: %+v", st)
			}
			b.ReportMetric(float64(changes)/el.Seconds(), "changes/s")
			b.ReportMetric(float64(st.Published-st0.Published)/el.Seconds(), "records/s")
			b.ReportMetric(float64(changes)/cpu.Seconds(), "changes/cpu-s")
			b.ReportMetric(float64(st.WireBytes-st0.WireBytes)/float64(st.Published-st0.Published), "wire-B/record")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkFollowerLag: a primary of 200,000 flows changing states at
// a steady rate (paced every millisecond, flows in turn), its publisher
// at the default interval (100 ms), and a follower. mix=coalesced: each
// changed flow changes ten times in a row (a connection's burst of
// transitions), so an interval's changes fall on a tenth as many flows;
// mix=raw: each change on another flow, every one a record. Every 10 ms
// a probe flow's state is set to a new value; lag is the time until the
// follower's table holds it (polled every 200 µs): the wait for the
// flush, the publish, the store, the delivery and the apply. A probe
// that waits 10 s stops the run (the stream cannot keep up). Each op is
// one second of it.
func BenchmarkFollowerLag(b *testing.B) {
	for _, tc := range []struct {
		mix       string
		rate, per int
	}{{"coalesced", 100_000, 10}, {"raw", 100_000, 1}, {"raw", 30_000, 1}} {
		b.Run(fmt.Sprintf("mix=%s/rate=%d", tc.mix, tc.rate), func(b *testing.B) {
			followerLag(b, tc.rate, tc.per)
		})
	}
}

func followerLag(b *testing.B, rate, per int) {
	const flows, probes = 200_000, 100
	br := newBenchServer(b)
	primary, standby := benchTable(b, flows+probes), benchTable(b, flows+probes)
	es := fillBench(b, primary, flows)
	for i := range probes {
		if _, err := primary.Insert(key(flows+i), Flow{Port: 1}); err != nil {
			b.Fatal(err)
		}
	}
	cfg := br.pubConfig()
	cfg.Interval, cfg.Queue, cfg.LeaseTTL = 0, 1<<20, 2*time.Second // the defaults: 100 ms
	p := benchPublisher(b, br, primary, cfg)
	f := benchFollower(b, br, standby)

	var lags []time.Duration
	var changes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // rate changes a second, every millisecond, caught up if late
		start, next := time.Now(), 0
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			due := int(time.Since(start).Seconds() * float64(rate))
			for ; next < due; next++ {
				e := es[next/per%flows]
				s := e.State()
				e.CompareAndSwapState(s, s+1)
			}
			changes.Store(int64(next))
		}
	})
	defer func() { close(stop); wg.Wait() }()
	overloaded := false
	probe := func(i int, v uint32) time.Duration {
		k := key(flows + i%probes)
		e, _ := primary.Get(k)
		s := e.State()
		t0 := time.Now()
		e.CompareAndSwapState(s, v)
		for {
			if g, ok := standby.Get(k); ok && g.State() == v {
				return time.Since(t0)
			}
			if time.Since(t0) > 10*time.Second {
				overloaded = true
				return time.Since(t0)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	pst0, c0 := p.Stats(), changes.Load()
	b.ResetTimer()
	v := uint32(1)
	for b.Loop() {
		for end := time.Now().Add(time.Second); time.Now().Before(end) && !overloaded; {
			v++
			lags = append(lags, probe(int(v), v))
			time.Sleep(10 * time.Millisecond)
		}
	}
	el := b.Elapsed()
	st, pst := f.Stats(), p.Stats()
	slices.Sort(lags)
	if overloaded {
		b.Logf("overloaded: a probe waited %v; publisher %+v", lags[len(lags)-1], pst)
	}
	b.ReportMetric(float64(changes.Load()-c0)/el.Seconds(), "changes/s")
	b.ReportMetric(float64(pst.Published-pst0.Published)/el.Seconds(), "records/s")
	b.ReportMetric(ms(lags[len(lags)/2]), "lag-p50-ms")
	b.ReportMetric(ms(lags[len(lags)*99/100]), "lag-p99-ms")
	b.ReportMetric(ms(st.LagP50), "store-to-apply-p50-ms")
	b.ReportMetric(ms(st.LagP99), "store-to-apply-p99-ms")
	b.ReportMetric(float64(pst.Resyncs-pst0.Resyncs), "resyncs")
	b.ReportMetric(0, "ns/op")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// catchUpFlows: 1M flows; 100,000 with -short.
func catchUpFlows() int {
	if testing.Short() {
		return 100_000
	}
	return 1_000_000
}

// BenchmarkCatchUp: a follower that starts on an empty table while the
// stream holds every flow of its primary (a standby started after it):
// seconds until CaughtUp. Also: how long the primary's first resync took
// to publish them (once, before the ops), and the bytes per flow, as the
// publisher sent them (subject and record) and as the stream stores
// them (its own headers and index included).
func BenchmarkCatchUp(b *testing.B) {
	n := catchUpFlows()
	b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
		br := newBenchServer(b)
		primary := benchTable(b, n)
		fillBench(b, primary, n)
		cfg := br.pubConfig()
		cfg.Interval, cfg.Refresh = time.Hour, time.Hour
		start := time.Now()
		p := benchPublisher(b, br, primary, cfg)
		resync := time.Since(start)
		st := p.Stats()
		stream, err := br.connect(b).Stream(ctxFor(b), streamName(cfg.Name))
		if err != nil {
			b.Fatal(err)
		}
		info, err := stream.Info(ctxFor(b))
		if err != nil {
			b.Fatal(err)
		}
		var took time.Duration
		for b.Loop() {
			standby := benchTable(b, n)
			start := time.Now()
			fcfg := folConfig()
			fcfg.Name = br.name
			f, err := NewFollower(ctxFor(b), br.connect(b), standby, fcfg)
			if err != nil {
				b.Fatal(err)
			}
			await(b, "the follower catches up", f.CaughtUp(), func() any { return f.Stats() })
			took += time.Since(start)
			f.Close()
			if standby.Len() != n {
				b.Fatalf("caught up with %d flows of %d", standby.Len(), n)
			}
			standby.Close()
		}
		b.ReportMetric(took.Seconds()/float64(b.N), "catchup-s")
		b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "flows/s")
		b.ReportMetric(resync.Seconds(), "publish-s")
		b.ReportMetric(float64(st.WireBytes)/float64(n), "wire-B/flow")
		b.ReportMetric(float64(info.State.Bytes)/float64(info.State.Msgs), "stored-B/flow")
		b.ReportMetric(0, "ns/op")
	})
}

// BenchmarkPromote: a standby of 100,000 flows, caught up, promoted:
// how long Promote takes (apply what the stream holds, take the lease at
// the next epoch, attach the feed), and how long the promoted
// publisher's first flush (its resync of every flow) then takes. Each op
// promotes the follower of the last op's publisher.
func BenchmarkPromote(b *testing.B) {
	const n = 100_000
	br := newBenchServer(b)
	primary := benchTable(b, n)
	fillBench(b, primary, n)
	cfg := br.pubConfig()
	cfg.Interval = 100 * time.Millisecond
	p := benchPublisher(b, br, primary, cfg)
	var promote, resync time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		standby := benchTable(b, n)
		f := benchFollower(b, br, standby)
		b.StartTimer()
		start := time.Now()
		np, err := f.Promote(ctxFor(b), cfg)
		if err != nil {
			b.Fatal(err)
		}
		promote += time.Since(start)
		start = time.Now()
		if err := np.Flush(ctxFor(b)); err != nil {
			b.Fatal(err)
		}
		resync += time.Since(start)
		b.StopTimer()
		p.Close()
		p = np
		b.StartTimer()
	}
	p.Close()
	b.ReportMetric(ms(promote)/float64(b.N), "promote-ms")
	b.ReportMetric(ms(resync)/float64(b.N), "first-flush-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPublisherCost is the table's data path with a publisher
// attached (pub=on: flushing every 100 ms to the in-process server) and
// without one (pub=off), as bench's BenchmarkFeedCost measures it with a
// bare change feed: Get, GetOrInsertBatch of 32 present keys, Count,
// CompareAndSwapState, and an insert with the removal that keeps the
// table at its size. 100,000 flows, one goroutine; the publisher's
// flusher and the server run beside it.
func BenchmarkPublisherCost(b *testing.B) {
	const flows = 100_000
	for _, op := range []string{"get", "batch", "count", "cas", "insert"} {
		for _, pub := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("op=%s/pub=%s", op, pub), func(b *testing.B) {
				t := benchTable(b, flows+1024)
				es := fillBench(b, t, flows)
				keys := make([]flowcache.FlowKey, flows)
				for i := range keys {
					keys[i] = key(int(uint64(i) * 0x9e3779b97f4a7c15 % flows)) // a shuffled order
				}
				if pub == "on" {
					br := newBenchServer(b)
					cfg := br.pubConfig()
					cfg.Interval, cfg.Queue, cfg.Filter = 100*time.Millisecond, 1<<20, nil
					benchPublisher(b, br, t, cfg)
				}
				out := make([]*flowcache.Entry[Flow], 32)
				mk := func(int) Flow { return Flow{} }
				i, next := 0, flows
				b.ResetTimer()
				for b.Loop() {
					switch op {
					case "get":
						if _, ok := t.Get(keys[i%flows]); !ok {
							b.Fatal("miss")
						}
					case "batch":
						j := i * 32 % (flows - 32)
						t.GetOrInsertBatch(keys[j:j+32], mk, out)
					case "count":
						es[i*7919%flows].Count(64)
					case "cas":
						e := es[i*7919%flows]
						s := e.State()
						e.CompareAndSwapState(s, s+1)
					case "insert":
						if _, err := t.Insert(key(next), Flow{}); err != nil {
							b.Fatal(err)
						}
						t.Remove(key(next - flows))
						next++
					}
					i++
				}
			})
		}
	}
}
