package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowcache/flowcache/bench"
	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// Config is one run of flowbench. The zero values of the optional fields
// are filled in by withDefaults.
type Config struct {
	Impl       string        // "flowcache" (the real thing) or a peer's name from bench.Impls
	Duration   time.Duration // wall time of a model run
	Flows      int           // base flow population of the model
	SpikeFlows int           // flows of the churn spike
	Limit      int           // table limit (the peers are held to it too)
	Seed       uint64
	Speed      float64       // simulated seconds per real second
	TTL        time.Duration // idle timeout of an established flow, simulated
	SynTTL     time.Duration // idle timeout of a flow that saw only SYNs, simulated
	Pass       time.Duration // expiry pass period, simulated
	Batch      int           // packets per batch
	Workers    int           // worker goroutines; 0: GOMAXPROCS
	SampleEach int           // time one batch in SampleEach; 0: 64 (1 when replaying)
	Capture    string        // replay this pcap/pcapng file instead of the model
	Loops      int           // times to replay the capture
	Progress   io.Writer     // progress line; nil: none
}

func (c Config) withDefaults() Config {
	if c.Impl == "" {
		c.Impl = "flowcache"
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	if c.Flows <= 0 {
		c.Flows = 100_000
	}
	if c.Limit <= 0 {
		c.Limit = 1_000_000
	}
	if c.SpikeFlows < 0 {
		c.SpikeFlows = 0
	}
	if c.Speed <= 0 {
		c.Speed = 10
	}
	if c.TTL <= 0 {
		c.TTL = flowcache.DefaultTTL
	}
	if c.SynTTL <= 0 {
		c.SynTTL = 20 * time.Second
	}
	if c.Pass <= 0 {
		c.Pass = 5 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 32
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.SampleEach <= 0 {
		c.SampleEach = 64
		if c.Capture != "" {
			c.SampleEach = 1
		}
	}
	if c.Loops <= 0 {
		c.Loops = 1
	}
	return c
}

// The flow states the model creates: Action says which TTL applies.
const (
	actEstablished = 1
	actSynOnly     = 2
)

func mkEstablished() bench.State { return bench.State{Action: actEstablished} }
func mkSynOnly() bench.State     { return bench.State{Action: actSynOnly} }

// workerStats are one worker's counters: written by it alone (atomically,
// so that the reporter may read them while it runs), padded to their own
// cache lines.
type workerStats struct {
	packets, hits, inserted, full atomic.Uint64
	lat                           []uint32 // ns per key of the timed batches; read after the worker ends
	_                             [64]byte
}

// finish publishes a worker's final counts, and keeps its last action
// alive so the lookups that read it are not optimised away.
func (st *workerStats) finish(packets, hits, inserted, full uint64, action uint32) {
	st.packets.Store(packets)
	st.hits.Store(hits)
	st.inserted.Store(inserted)
	st.full.Store(full)
	sinkAction.Store(action)
}

// sim is one run in progress.
type sim struct {
	cfg   Config
	start time.Time // real
	base  time.Time // simulated time at start
	stop  atomic.Bool
	ws    []workerStats

	// flowcache
	t      *flowcache.Table[bench.State]
	domain *reclaim.Domain

	// a peer: its own expiry pass and limit, see peerWorker
	m        bench.Map
	live     atomic.Int64
	coarse   atomic.Int64 // the peers' coarse clock: simulated ms of the last pass
	expired  atomic.Uint64
	sweepers sync.WaitGroup

	prog *progress // the progress display, once the first tick draws it
}

// simMs is the simulated time in ms since the start.
func (s *sim) simMs() int64 {
	return int64(float64(time.Since(s.start)) * s.cfg.Speed / float64(time.Millisecond))
}

func (s *sim) clock() time.Time { return s.base.Add(time.Duration(s.simMs()) * time.Millisecond) }

// synClass is the timeout class of a new flow: 1 (SynTTL) for a flow that
// has seen only a SYN, 0 (TTL) otherwise.
func synClass(v *bench.State) int {
	if v.Action == actSynOnly {
		return 1
	}
	return 0
}

// ttlOf is the model's TTL for a flow in state v.
func (s *sim) ttlOf(v *bench.State) time.Duration {
	if v.Action == actSynOnly {
		return s.cfg.SynTTL
	}
	return s.cfg.TTL
}

// run runs one simulation (or replay) to its end and reports on it. Each
// step is a function of its own, in the order a run takes them.
func run(cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if cfg.Capture != "" {
		cfg.Speed = 1 // a replay runs on the real clock
	}
	tr, err := newTraffic(cfg)
	if err != nil {
		return nil, err
	}
	s, err := newSim(cfg)
	if err != nil {
		return nil, err
	}
	defer s.close()
	rep := s.newReport(tr.model)
	rep.HeapStart, _ = heapAfterGC()

	stopPasses := s.startPasses()
	done := s.startWorkers(tr)
	s.report(rep, tr.model, done)
	stopPasses()

	s.finishReport(rep, tr)
	runtime.KeepAlive(s.t)
	runtime.KeepAlive(s.m)
	return rep, nil
}

// traffic is where the workers' packets come from: the model, one source
// per worker, or a capture's replay, which every worker shares.
type traffic struct {
	model *model   // nil for a replay
	srcs  []source // one per worker
}

// newTraffic builds the traffic of cfg: the capture's replay when
// cfg.Capture is set, the model otherwise.
func newTraffic(cfg Config) (*traffic, error) {
	tr := &traffic{srcs: make([]source, cfg.Workers)}
	if cfg.Capture != "" {
		keys, info, err := loadCapture(cfg.Capture)
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("%s: no IP packets (%s)", cfg.Capture, info)
		}
		rp := newReplay(keys, cfg.Loops)
		for w := range tr.srcs {
			tr.srcs[w] = rp
		}
		return tr, nil
	}
	tr.model = &model{
		flows:      cfg.Flows,
		workers:    cfg.Workers,
		spikeFrom:  int64(0.3 * cfg.Duration.Seconds() * cfg.Speed * 1000),
		spikeTo:    int64(0.5 * cfg.Duration.Seconds() * cfg.Speed * 1000),
		spikeFlows: cfg.SpikeFlows,
		seed:       cfg.Seed,
	}
	for w := range tr.srcs {
		tr.srcs[w] = tr.model.source(w)
	}
	return tr, nil
}

// floodSent is how many flows of the spike the model's sources sent; 0
// for a replay.
func (tr *traffic) floodSent() int {
	if tr.model == nil {
		return 0
	}
	n := 0
	for _, src := range tr.srcs {
		n += src.(*modelSource).floodDone
	}
	return n
}

// newSim starts the simulated clock, then opens what the workers will
// drive: a flowcache table on its own domain, or the peer named by
// cfg.Impl. The clock starts first because the table reads it in New.
func newSim(cfg Config) (*sim, error) {
	s := &sim{cfg: cfg, ws: make([]workerStats, cfg.Workers), base: time.Now().Truncate(time.Second), start: time.Now()}
	if cfg.Impl == "flowcache" {
		return s, s.openTable()
	}
	return s, s.openPeer()
}

// openTable makes the table: the run's limit and seed, class 0 for
// established flows (TTL) and class 1 for flows that saw only a SYN
// (SynTTL), on the simulated clock.
func (s *sim) openTable() error {
	s.domain = reclaim.NewDomain()
	t, err := flowcache.New(flowcache.Config[bench.State]{
		Name:     "flowbench",
		Limit:    s.cfg.Limit,
		TTL:      s.cfg.TTL,
		Timeouts: []time.Duration{s.cfg.SynTTL},
		Class:    synClass,
		Seed:     s.cfg.Seed,
		Clock:    s.clock,
		Domain:   s.domain,
	})
	if err != nil {
		return err
	}
	s.t = t
	return nil
}

// openPeer makes the peer's map, sized for the limit.
func (s *sim) openPeer() error {
	im, ok := bench.ImplNamed(s.cfg.Impl)
	if !ok {
		return fmt.Errorf("no implementation %q (have %s)", s.cfg.Impl, implNames())
	}
	s.m = im.New(s.cfg.Limit)
	return nil
}

// close closes the table, if the run has one.
func (s *sim) close() {
	if s.t != nil {
		s.t.Close()
	}
}

// newReport is the report's header: what runs, on what traffic.
func (s *sim) newReport(m *model) *Report {
	cfg := s.cfg
	rep := &Report{Impl: cfg.Impl, Workers: cfg.Workers, Batch: cfg.Batch, Limit: cfg.Limit, Capture: cfg.Capture}
	if m != nil {
		rep.Model = fmt.Sprintf("base %d flows (Zipf s=%.1f, Pareto lifetimes ≥%ds), spike %d SYN flows at %d-%d s; TTL %v, SYN TTL %v, pass every %v (simulated, %.0fx)",
			cfg.Flows, zipfS, lifeMinMs/1000, cfg.SpikeFlows, m.spikeFrom/1000, m.spikeTo/1000, cfg.TTL, cfg.SynTTL, cfg.Pass, cfg.Speed)
	}
	return rep
}

// startPasses starts the expiry passes, one every cfg.Pass of simulated
// time: a Reclaimer on the table's domain, or the peer's sweeper. It
// returns a function that stops them.
func (s *sim) startPasses() (stop func()) {
	every := time.Duration(float64(s.cfg.Pass) / s.cfg.Speed)
	if s.t == nil {
		return s.startSweeper(every)
	}
	rec := reclaim.NewReclaimer(s.domain, every)
	rec.Start()
	return func() { rec.Close() }
}

// startWorkers starts cfg.Workers workers, each on its own source, and
// returns a channel that is closed once they have all ended.
func (s *sim) startWorkers(tr *traffic) <-chan struct{} {
	var wg sync.WaitGroup
	for w, src := range tr.srcs {
		wg.Go(func() {
			if s.t != nil {
				s.tableWorker(w, src)
			} else {
				s.peerWorker(w, src)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// finishReport fills in what the run did, once it is over: its length,
// the workers' counts and latencies, the flows the spike sent, and the
// table's (or the map's) state at the end.
func (s *sim) finishReport(rep *Report, tr *traffic) {
	rep.Elapsed = time.Since(s.start)
	rep.SimElapsed = time.Duration(float64(rep.Elapsed) * s.cfg.Speed)
	var lat []uint32
	for i := range s.ws {
		w := &s.ws[i]
		rep.Packets += w.packets.Load()
		rep.Hits += w.hits.Load()
		rep.Inserted += w.inserted.Load()
		rep.Full += w.full.Load()
		lat = append(lat, w.lat...)
	}
	rep.setLatency(lat)
	rep.FloodSent = tr.floodSent()
	if s.t != nil {
		st := s.t.Stats()
		rep.LiveEnd, rep.Expired = st.Live, st.Expired
		rep.Grows, rep.Shrinks, rep.Floods = st.Grows, st.Shrinks, st.Floods
		rep.TableBytes = st.Bytes
	} else {
		rep.LiveEnd, rep.Expired = s.m.Len(), s.expired.Load()
	}
	rep.LivePeak = max(rep.LivePeak, rep.LiveEnd)
}

// sampleEvery is the period of Report.Samples.
const sampleEvery = 500 * time.Millisecond

// report watches the run from the calling goroutine until done (or the
// model's duration is up): the progress line, a sample of live flows and
// heap every sampleEvery, and the heap after a forced GC just before the
// spike, at its end (the peak) and after the drain.
func (s *sim) report(rep *Report, m *model, done <-chan struct{}) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var nextSample time.Duration
	gcBefore, gcPeak := m == nil, m == nil
	var lastPkts uint64
	lastT := time.Duration(0)
	var mpps float64
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case <-tick.C:
		}
		el := time.Since(s.start)
		if m != nil && el >= s.cfg.Duration {
			finished = true
		}
		live := s.liveNow()
		rep.LivePeak = max(rep.LivePeak, live)
		sim := s.simMs()
		if m != nil && !gcBefore && sim >= m.spikeFrom {
			gcBefore = true
			rep.HeapBefore, rep.InuseBefore = heapAfterGC()
		}
		if m != nil && !gcPeak && sim >= m.spikeTo {
			gcPeak = true
			rep.HeapPeak, rep.InusePeak = heapAfterGC()
			rep.LiveAtPeakGC = s.liveNow()
			if s.t != nil {
				rep.TableAtPeak = s.t.Stats().Bytes
			}
		}
		if el >= nextSample || finished {
			var pk uint64
			for i := range s.ws {
				pk += s.ws[i].packets.Load()
			}
			if d := (el - lastT).Seconds(); d > 0 {
				mpps = float64(pk-lastPkts) / d / 1e6
			}
			lastPkts, lastT = pk, el
			smp := Sample{T: el.Seconds(), SimT: float64(sim) / 1000, Live: live, Mpps: mpps}
			smp.Heap, smp.Inuse, smp.Marked = heapNow()
			if s.t != nil {
				smp.Table = s.t.Stats().Bytes
			}
			rep.Samples = append(rep.Samples, smp)
			nextSample += sampleEvery
		}
		if s.cfg.Progress != nil {
			s.progress(el, sim, live, mpps, m)
		}
	}
	s.stop.Store(true)
	<-done
	s.progressDone()
	rep.HeapAfter, rep.InuseAfter = heapAfterGC()
	if m == nil { // a replay has no spike: its peak is its end
		rep.HeapBefore, rep.HeapPeak = rep.HeapStart, rep.HeapAfter
		rep.InusePeak = rep.InuseAfter
	}
}

func (s *sim) liveNow() int {
	if s.t != nil {
		return s.t.Len()
	}
	return int(s.live.Load())
}

// tableWorker is one core of the forwarder on flowcache: a batch of keys
// from its source, one GetOrInsertBatch (the batch lookup, then an insert
// for each miss, SYN-only flows in the SYN timeout class), and a quiescent
// point between batches. The latency sampled is the whole step's, per key.
func (s *sim) tableWorker(w int, src source) {
	r := s.domain.Register()
	defer r.Unregister()
	st := &s.ws[w]
	n := s.cfg.Batch
	keys := make([]flowcache.FlowKey, n)
	syn := make([]bool, n)
	out := make([]*flowcache.Entry[bench.State], n)
	var packets, hits, inserted, full uint64
	var action uint32
	for b := 0; !s.stop.Load(); b++ {
		k := keys[:src.next(keys, syn, s.simMs())]
		if len(k) == 0 {
			break
		}
		var t0 time.Time
		timed := b%s.cfg.SampleEach == 0
		if timed {
			t0 = time.Now()
		}
		inserts := 0
		set := s.t.GetOrInsertBatch(k, func(i int) bench.State {
			inserts++
			if syn[i] {
				return mkSynOnly()
			}
			return mkEstablished()
		}, out)
		if timed {
			st.lat = append(st.lat, uint32(time.Since(t0).Nanoseconds()/int64(len(k))))
		}
		hits += uint64(set - inserts)
		inserted += uint64(inserts)
		full += uint64(len(k) - set) // dropped
		for _, e := range out[:len(k)] {
			if e != nil {
				action |= e.Value().Action // the forwarding decision
			}
		}
		packets += uint64(len(k))
		r.Quiescent()
		if b%16 == 0 {
			st.packets.Store(packets)
		}
	}
	st.finish(packets, hits, inserted, full, action)
}

var sinkAction atomic.Uint32

// peerWorker is tableWorker over a bench.Map. A Go map has no expiry, so
// flowbench adds what a forwarder would have to: each flow's last-seen
// time, from a coarse clock that the sweeper advances once a pass and
// written only when that clock has moved (as flowcache refreshes its
// stamp), kept in State.Bytes; and the limit, kept with one shared
// counter. The sweeper (startSweeper) removes idle flows with the same
// TTLs. The lookup with its refresh is what is timed, as GetBatch is.
// Without GetOrInsert, two workers that miss the same new flow both
// insert it (the second replaces the first): the model never does that,
// as each flow belongs to one worker, but a replay does, and then the
// created count and the limit count such a flow twice; Len at the end is
// exact.
func (s *sim) peerWorker(w int, src source) {
	st := &s.ws[w]
	n := s.cfg.Batch
	keys := make([]flowcache.FlowKey, n)
	syn := make([]bool, n)
	out := make([]*bench.State, n)
	limit := int64(s.cfg.Limit)
	var packets, hits, inserted, full uint64
	var action uint32
	for b := 0; !s.stop.Load(); b++ {
		k := keys[:src.next(keys, syn, s.simMs())]
		if len(k) == 0 {
			break
		}
		now := uint64(s.coarse.Load())
		var t0 time.Time
		timed := b%s.cfg.SampleEach == 0
		if timed {
			t0 = time.Now()
		}
		for i := range k {
			v, ok := s.m.Get(k[i])
			if ok {
				if atomic.LoadUint64(&v.Bytes) != now {
					atomic.StoreUint64(&v.Bytes, now)
				}
				hits++
			}
			out[i] = v
		}
		if timed {
			st.lat = append(st.lat, uint32(time.Since(t0).Nanoseconds()/int64(len(k))))
		}
		for i, v := range out[:len(k)] {
			if v != nil {
				action |= v.Action
				continue
			}
			if !s.reserve(limit) {
				full++
				continue
			}
			act := uint32(actEstablished)
			if syn[i] {
				act = actSynOnly
			}
			s.m.Insert(k[i], bench.State{Action: act, Bytes: now})
			inserted++
		}
		packets += uint64(len(k))
		if b%16 == 0 {
			st.packets.Store(packets)
		}
	}
	st.finish(packets, hits, inserted, full, action)
}

// reserve takes one unit of a peer's limit, as flowcache's insert does.
func (s *sim) reserve(limit int64) bool {
	for {
		n := s.live.Load()
		if n >= limit {
			return false
		}
		if s.live.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// startSweeper starts the peers' expiry pass: every period it advances
// the coarse clock, walks the map with Range and removes the flows idle
// for their TTL (collected first, then removed: Range must not call the
// map). It returns a function that stops it.
func (s *sim) startSweeper(every time.Duration) (stop func()) {
	quit := make(chan struct{})
	s.sweepers.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var dead []flowcache.FlowKey
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			now := s.simMs()
			s.coarse.Store(now)
			dead = dead[:0]
			s.m.Range(func(k flowcache.FlowKey, v *bench.State) bool {
				if now-int64(atomic.LoadUint64(&v.Bytes)) >= s.ttlOf(v).Milliseconds() {
					dead = append(dead, k)
				}
				return true
			})
			for _, k := range dead {
				s.m.Remove(k)
			}
			s.live.Add(-int64(len(dead)))
			s.expired.Add(uint64(len(dead)))
		}
	})
	return func() { close(quit); s.sweepers.Wait() }
}

func implNames() string {
	var names []string
	for _, im := range bench.Impls {
		names = append(names, im.Name)
	}
	return strings.Join(names, ", ")
}

var heapMetrics = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

// heapNow is the heap's allocated objects now, garbage included
// (HeapAlloc); the heap in use, the spans that hold them with the room
// between them (HeapInuse); and the objects the last collection found
// live. It reads them without stopping the world.
func heapNow() (objects, inuse, marked uint64) {
	metrics.Read(heapMetrics)
	objects = heapMetrics[0].Value.Uint64()
	return objects, objects + heapMetrics[1].Value.Uint64(), heapMetrics[2].Value.Uint64()
}

// heapAfterGC collects the garbage (twice, and returns free spans to the
// OS), then gives HeapAlloc, the live objects, and HeapInuse, the spans
// that hold them: the heap the program holds.
func heapAfterGC() (alloc, inuse uint64) {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.HeapInuse
}

// percentile of sorted xs, q in [0, 1].
func percentile(xs []uint32, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return float64(xs[min(int(q*float64(len(xs))), len(xs)-1)])
}

func sortU32(xs []uint32) { slices.Sort(xs) }
