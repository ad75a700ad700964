package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"golang.org/x/sys/unix"
)

// forwarder is the running program: the table, its reclaimer, the workers
// and what the once-a-second monitor has seen.
type forwarder struct {
	o       options
	table   *flowcache.Table[Flow]
	domain  *reclaim.Domain
	ifs     interfaces
	workers []*worker
	rx      []receiver // one of each per worker
	tx      []sender
	busy    []busyTime // one per worker
	peak    atomic.Int64
	start   time.Time

	// Flows that outlive the process: -replicate or -standby, -snapshot.
	repl *replication
	snap *snapStatus
	// The workers: started at once, or by a standby's promotion; wait
	// returns their errors once they stopped.
	ctx        context.Context
	cancel     func()
	wait       func() []error
	forwarding time.Duration // a promoted standby: from the decision to forwarding
	signals    chan os.Signal

	// Monitor state, touched only by the goroutine running run.
	lastIn                 uint64
	lastAt                 time.Time
	pps, peakPPS           float64
	tableBefore, tablePeak int64
	heapBefore, heapPeak   heapSample
	cpuBefore              float64
	drops                  uint64
	tableAfter             int64
	heapAfter              heapSample
	stopped                bool
}

func runForwarder(o options) error {
	ifs, err := checkOptions(o)
	if err != nil {
		return err
	}
	// One domain for this table: its Reclaimer runs the expiry pass
	// every second, and the workers' Quiescent calls end its grace
	// periods.
	domain := reclaim.NewDomain()
	table, err := flowcache.New(tableConfig(ifs.in.Name, o.limit, o.ttl, ifs.policy, domain))
	if err != nil {
		return err
	}
	defer table.Close()
	f := &forwarder{o: o, table: table, domain: domain, ifs: ifs, busy: make([]busyTime, o.workers)}
	defer f.closeIO()
	if o.snapshot != "" {
		f.snap = restoreSnapshot(o.snapshot, table)
		if f.snap.RestoreError != "" {
			fmt.Fprintf(os.Stderr, "forwarder: -snapshot %s not restored, starting empty: %s\n", o.snapshot, f.snap.RestoreError)
		} else {
			fmt.Fprintf(os.Stderr, "forwarder: -snapshot %s: %d flows restored in %.1f ms\n", o.snapshot, f.snap.Restored, f.snap.RestoreMS)
		}
	}
	switch {
	case o.standby != "":
		f.repl, err = startStandby(o, table)
	case o.replicate != "":
		f.repl, err = startPrimary(o, table)
	}
	if err != nil {
		return err
	}
	defer f.repl.close() // on an early return; after the workers otherwise, below
	if o.metricsAddr != "" {
		srv, addr, err := serveMetrics(o.metricsAddr, table, domain, f.repl)
		if err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		defer srv.Close()
		fmt.Fprintf(os.Stderr, "forwarder: metrics on http://%s/metrics\n", addr)
	}
	reclaimer := reclaim.NewReclaimer(domain, time.Second)
	reclaimer.Start()
	defer reclaimer.Close()

	f.ctx, f.cancel = signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer f.cancel()
	f.signals = make(chan os.Signal, 1)
	signal.Notify(f.signals, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(f.signals)
	f.before()
	fmt.Fprintf(os.Stderr, "forwarder: %s -> %s (next hop %s), %d workers, -io=%s, limit %d, ttl %v, full policy %s%s\n",
		ifs.in.Name, ifs.out.Name, ifs.hop, o.workers, o.io, o.limit, o.ttl, o.fullPolicy, f.roleLine())
	if !f.repl.standingBy() {
		if err := f.startForwarding(); err != nil {
			return err
		}
	}
	f.monitor()
	var werrs []error
	if f.wait != nil {
		werrs = f.wait()
	}
	f.after()
	// The workers have stopped: the last changes go out, then the
	// snapshot is the table's last state.
	if err := f.repl.close(); err != nil {
		werrs = append(werrs, fmt.Errorf("replication: %w", err))
	}
	if f.snap != nil {
		if err := writeSnapshot(f.snap, table); err != nil {
			werrs = append(werrs, fmt.Errorf("-snapshot %s: %w", o.snapshot, err))
		} else {
			fmt.Fprintf(os.Stderr, "forwarder: -snapshot %s: %d flows, %d bytes, written in %.1f ms\n", o.snapshot, f.snap.Written, f.snap.Bytes, f.snap.WriteMS)
		}
	}
	if err := f.writeResults(); err != nil {
		return err
	}
	return errors.Join(werrs...)
}

// roleLine says what the forwarder replicates, for the start-up line.
func (f *forwarder) roleLine() string {
	switch {
	case f.o.standby != "":
		return fmt.Sprintf(", standby of %q at %s (forwarding once promoted: SIGUSR1, or the primary's lease lapses)", f.o.replName, f.o.standby)
	case f.o.replicate != "":
		return fmt.Sprintf(", replicating %q to %s", f.o.replName, f.o.replicate)
	}
	return ""
}

// startForwarding opens every worker's I/O and starts the workers.
func (f *forwarder) startForwarding() error {
	if err := f.openWorkers(f.ifs, f.domain); err != nil {
		return err
	}
	f.wait = f.startWorkers(f.ctx, f.cancel)
	return nil
}

// promote makes a standby the primary and starts forwarding. It fails
// when the stream cannot be reached (the forwarder stays a standby and
// tries again) or the interfaces cannot be opened.
func (f *forwarder) promote(why string) error {
	start := time.Now()
	if err := f.repl.promote(why); err != nil {
		return err
	}
	if err := f.startForwarding(); err != nil {
		return err
	}
	f.forwarding = time.Since(start)
	st := f.repl.Stats()
	fmt.Fprintf(os.Stderr, "forwarder: promoted (%s) at epoch %d with %d flows in %.1f ms; forwarding %.1f ms after the decision\n",
		why, st.Epoch, f.table.Len(), ms(f.repl.promoteIn), ms(f.forwarding))
	return nil
}

// interfaces is what the forwarder's options name, checked.
type interfaces struct {
	in, out *net.Interface
	hop     net.HardwareAddr
	policy  FullPolicy
}

// checkOptions checks the forwarder's options and looks up what they
// name, before anything is opened.
func checkOptions(o options) (interfaces, error) {
	var ifs interfaces
	if o.in == "" || o.out == "" || o.nextHop == "" {
		return ifs, errors.New("-in, -out and -next-hop are required (or -keys-from, or -sink)")
	}
	var err error
	if ifs.policy, err = parsePolicy(o.fullPolicy); err != nil {
		return ifs, err
	}
	if ifs.in, err = net.InterfaceByName(o.in); err != nil {
		return ifs, err
	}
	if ifs.out, err = net.InterfaceByName(o.out); err != nil {
		return ifs, err
	}
	ifs.hop, err = net.ParseMAC(o.nextHop)
	if err != nil || len(ifs.hop) != 6 {
		return ifs, fmt.Errorf("-next-hop %q: not an Ethernet MAC", o.nextHop)
	}
	if len(ifs.out.HardwareAddr) != 6 {
		return ifs, fmt.Errorf("%s has no Ethernet MAC", ifs.out.Name)
	}
	if o.workers < 1 || o.batch < 1 {
		return ifs, errors.New("-workers and -batch must be at least 1")
	}
	if o.io == "ring" {
		if err := checkRing(o.ring, ifs.in); err != nil {
			return ifs, err
		}
	}
	if o.dumpFormat != "text" && o.dumpFormat != "json" {
		return ifs, fmt.Errorf("-dump-format must be text or json, not %q", o.dumpFormat)
	}
	return ifs, checkReplication(o)
}

// checkReplication checks the flags of flows that outlive the process.
func checkReplication(o options) error {
	if o.replicate != "" && o.standby != "" {
		return errors.New("-replicate and -standby: a forwarder is the primary or its standby, not both")
	}
	if o.replFilter != "assured" && o.replFilter != "all" {
		return fmt.Errorf("-replicate-filter must be assured or all, not %q", o.replFilter)
	}
	if o.leaseTTL < 30*time.Millisecond {
		return fmt.Errorf("-lease-ttl %v: too short (the lease is renewed every third of it)", o.leaseTTL)
	}
	return nil
}

// openWorkers opens each worker's receive and send side (one fanout
// group across them) and registers its Reader.
func (f *forwarder) openWorkers(ifs interfaces, domain *reclaim.Domain) error {
	fanout := uint16(os.Getpid()%0xffff + 1) // a group id of this process's own, never 0
	for range f.o.workers {
		rx, tx, err := openIO(f.o, ifs.in, ifs.out, fanout)
		if err != nil {
			return err
		}
		f.rx, f.tx = append(f.rx, rx), append(f.tx, tx)

		w := newWorker(f.table, f.o.batch)
		w.reader = domain.Register()
		w.policy = ifs.policy
		w.dstMAC = [6]byte(ifs.hop)
		w.srcMAC = [6]byte(ifs.out.HardwareAddr)
		w.send = tx.send
		w.peak = &f.peak
		if f.o.flowsFile != "" {
			w.seen = make(map[flowcache.FlowKey]struct{})
		}
		f.workers = append(f.workers, w)
	}
	return nil
}

// startWorkers runs every worker until ctx is done (a worker's error
// cancels the others); the returned function waits for them and gives
// their errors.
func (f *forwarder) startWorkers(ctx context.Context, cancel func()) func() []error {
	var wg sync.WaitGroup
	errs := make(chan error, len(f.workers))
	for i, w := range f.workers {
		wg.Go(func() {
			if err := w.run(ctx.Done(), f.rx[i], &f.busy[i]); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	return func() []error {
		wg.Wait()
		close(errs)
		var werrs []error
		for err := range errs {
			werrs = append(werrs, err)
		}
		return werrs
	}
}

// monitor samples the counters once a second (printing them with -stats,
// writing them with -status), dumps the table on SIGUSR1 and SIGUSR2,
// and promotes a standby (SIGUSR1 while standing by, or the primary's
// lease lapsing), until SIGINT or SIGTERM (or a worker's error).
func (f *forwarder) monitor() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lapsed := f.repl.lapsed()
	retry := "" // a promotion that failed, tried again every second
	fencedSeen := false
	for {
		var fenced <-chan struct{}
		if !fencedSeen {
			fenced = f.repl.fenced() // a primary's, once there is one
		}
		select {
		case <-tick.C:
			if retry != "" && f.repl.standingBy() {
				if err := f.promote(retry); err != nil {
					fmt.Fprintln(os.Stderr, "forwarder: promotion:", err)
				} else {
					retry = ""
				}
			}
			f.sample()
			if f.o.stats {
				fmt.Fprintln(os.Stderr, f.statsLine())
			}
			if f.o.statusFile != "" {
				if err := writeJSONFile(f.o.statusFile, f.report()); err != nil {
					fmt.Fprintln(os.Stderr, "forwarder: status:", err)
				}
			}
		case sig := <-f.signals:
			switch signalAction(sig, f.repl.standingBy()) {
			case actPromote:
				if err := f.promote("signal"); err != nil {
					fmt.Fprintln(os.Stderr, "forwarder: promotion:", err)
					retry = "signal"
				}
			case actDump:
				if err := f.dump(); err != nil {
					fmt.Fprintln(os.Stderr, "forwarder: dump:", err)
				}
			}
		case <-lapsed:
			lapsed = nil
			if f.repl.standingBy() {
				fmt.Fprintln(os.Stderr, "forwarder: the primary's lease lapsed: promoting")
				if err := f.promote("lease"); err != nil {
					fmt.Fprintln(os.Stderr, "forwarder: promotion:", err)
					retry = "lease"
				}
			}
		case <-fenced:
			// Another forwarder took over: this one keeps forwarding
			// (its table is still right for the traffic it gets) but
			// no longer replicates. Said once; the status says why.
			fencedSeen = true
			fmt.Fprintln(os.Stderr, "forwarder: replication stopped: another primary took the lease")
		case <-f.ctx.Done():
			return
		}
	}
}

// action is what a signal asks of the forwarder.
type action int

const (
	actNone action = iota
	actDump
	actPromote
)

// signalAction: SIGUSR1 promotes a standby, and dumps the table
// otherwise (a primary, a promoted standby, a forwarder without
// replication); SIGUSR2 dumps in every role.
func signalAction(sig os.Signal, standingBy bool) action {
	switch sig {
	case syscall.SIGUSR1:
		if standingBy {
			return actPromote
		}
		return actDump
	case syscall.SIGUSR2:
		return actDump
	}
	return actNone
}

// writeResults writes the JSON summary (to -summary, or stdout) and, with
// -flows-file, every flow key the workers inserted.
func (f *forwarder) writeResults() error {
	rep := f.report()
	var err error
	if f.o.summaryFile != "" {
		err = writeJSONFile(f.o.summaryFile, rep)
	} else {
		err = json.NewEncoder(os.Stdout).Encode(rep)
	}
	if err != nil || f.o.flowsFile == "" {
		return err
	}
	seen := make(map[flowcache.FlowKey]struct{})
	for _, w := range f.workers {
		maps.Copy(seen, w.seen)
	}
	return writeKeys(f.o.flowsFile, slices.Collect(maps.Keys(seen)))
}

// run is one worker's loop: read what is there (up to a batch), handle
// it, declare a quiescent state. The receiver waits when it has nothing;
// the worker stops only then, so whatever had arrived is handled first.
//
// An idle worker declares a quiescent state too, each time its receiver
// comes back empty (every 1 ms on a ring, 100 ms on a socket): a worker
// that reported only after batches would hold every grace period back
// while no traffic comes, and with it every OnRemove and every piece of
// table storage retired by the last passes (after a flood, tens of MiB).
func (w *worker) run(stop <-chan struct{}, rx receiver, busy *busyTime) error {
	defer w.reader.Unregister()
	var frames [][]byte
	for {
		var oversize int
		var err error
		frames, oversize, err = rx.read(frames)
		if err != nil {
			return err
		}
		if n := len(frames) + oversize; n > 0 {
			busy.begin()
			w.c.in.Add(uint64(n))
			w.c.oversize.Add(uint64(oversize))
		}
		if len(frames) > 0 {
			w.handle(frames)
			// No entry from this batch is held past here.
			w.reader.Quiescent()
			busy.end()
			continue
		}
		// Idle: this worker holds no entry at all.
		w.reader.Quiescent()
		select {
		case <-stop:
			return nil
		default:
		}
	}
}

// busyTime is when one worker read its first frame and finished its last
// batch: the span over which the summary's active_pps is the forwarder's
// rate, however long it idled before and after.
type busyTime struct {
	first, last atomic.Int64 // Unix ns; 0 until then
	_           [48]byte     // off the next worker's cache line
}

func (b *busyTime) begin() {
	if b.first.Load() == 0 {
		b.first.Store(time.Now().UnixNano())
	}
}

func (b *busyTime) end() { b.last.Store(time.Now().UnixNano()) }

// activeSeconds is the span from the first frame any worker read to the
// end of the last batch any worker handled.
func (f *forwarder) activeSeconds() float64 {
	var first, last int64
	for i := range f.busy {
		b := &f.busy[i]
		if t := b.first.Load(); t != 0 && (first == 0 || t < first) {
			first = t
		}
		last = max(last, b.last.Load())
	}
	if first == 0 || last <= first {
		return 0
	}
	return float64(last-first) / 1e9
}

func (f *forwarder) closeIO() {
	for _, rx := range f.rx {
		rx.close()
	}
	for _, tx := range f.tx {
		tx.close()
	}
}

// heapSample is the Go heap, read through runtime/metrics without
// stopping the world:
//
//   - objects: the bytes of heap objects, live and not yet swept
//     (runtime.MemStats.HeapAlloc);
//   - inuse: the bytes of the heap's spans in use, objects and the free
//     room in those spans (HeapInuse): what the process holds for its
//     heap, short of what it returned or could return to the OS. A flood
//     whose survivors are scattered over every span keeps this high
//     while objects falls; the table's compaction is what brings it down.
type heapSample struct {
	objects, inuse uint64
}

func readHeap() heapSample {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	metrics.Read(s)
	return heapSample{objects: s[0].Value.Uint64(), inuse: s[0].Value.Uint64() + s[1].Value.Uint64()}
}

func maxHeap(a, b heapSample) heapSample {
	return heapSample{objects: max(a.objects, b.objects), inuse: max(a.inuse, b.inuse)}
}

// before records the memory held before any traffic.
func (f *forwarder) before() {
	runtime.GC()
	f.start, f.lastAt = time.Now(), time.Now()
	f.tableBefore = f.table.Stats().Bytes
	f.heapBefore = readHeap()
	f.tablePeak, f.heapPeak = f.tableBefore, f.heapBefore
	f.cpuBefore = cpuSeconds()
}

// cpuSeconds is the CPU time (user + system) this process has used.
func cpuSeconds() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// sample updates packets/s and the memory peaks; once a second.
func (f *forwarder) sample() {
	now := time.Now()
	in := f.sum(func(c *counters) *atomic.Uint64 { return &c.in })
	if dt := now.Sub(f.lastAt).Seconds(); dt > 0 {
		f.pps = math.Round(float64(in-f.lastIn) / dt)
		f.peakPPS = max(f.peakPPS, f.pps)
	}
	f.lastIn, f.lastAt = in, now
	f.tablePeak = max(f.tablePeak, f.table.Stats().Bytes)
	f.heapPeak = maxHeap(f.heapPeak, readHeap())
	var drops uint64
	for _, rx := range f.rx {
		drops += rx.drops()
	}
	f.drops = drops
}

// after records the memory still held at exit, after a collection.
func (f *forwarder) after() {
	f.sample()
	runtime.GC()
	f.tableAfter = f.table.Stats().Bytes
	f.heapAfter = readHeap()
	f.stopped = true
}

func (f *forwarder) sum(field func(*counters) *atomic.Uint64) uint64 {
	var n uint64
	for _, w := range f.workers {
		n += field(&w.c).Load()
	}
	return n
}

// report is the forwarder's counters: the -status file, and the summary
// printed on exit.
type report struct {
	In      string  `json:"in"`
	Out     string  `json:"out"`
	IO      string  `json:"io"`
	Workers int     `json:"workers"`
	Seconds float64 `json:"seconds"`
	// From the first frame read to the end of the last batch, and the
	// frames read over that span: the rate to compare -io modes by.
	ActiveSeconds float64 `json:"active_seconds"`
	ActivePPS     float64 `json:"active_pps"`
	// Process CPU (user + system) since start, idle time included.
	CPUSeconds float64 `json:"cpu_seconds"`

	PacketsIn     uint64  `json:"packets_in"`
	PacketsOut    uint64  `json:"packets_out"`
	NotIP         uint64  `json:"not_ip"`
	Malformed     uint64  `json:"malformed"`
	Oversize      uint64  `json:"oversize"`
	DroppedFull   uint64  `json:"dropped_full"`
	ForwardedFull uint64  `json:"forwarded_full"`
	SendErrors    uint64  `json:"send_errors"`
	SocketDrops   uint64  `json:"socket_drops"`
	PPS           float64 `json:"pps"`
	PeakPPS       float64 `json:"peak_pps"`

	FullPolicy     string   `json:"full_policy"`
	Live           int      `json:"live"`
	Limit          int      `json:"limit"`
	PeakLive       int64    `json:"peak_live"`
	FlowsInserted  uint64   `json:"flows_inserted"`
	FullRejections uint64   `json:"full_rejections"`
	Evictions      uint64   `json:"evictions"` // = removals.evicted, under its own name as in /metrics
	Removals       removals `json:"removals"`
	Hits           uint64   `json:"hits"`
	Misses         uint64   `json:"misses"` // one per packet whose flow was not there yet
	Expired        uint64   `json:"expired"`
	Grows          uint64   `json:"grows"`
	Shrinks        uint64   `json:"shrinks"`
	Compactions    uint64   `json:"compactions"`
	Moved          uint64   `json:"moved"`

	Replication *replStatus `json:"replication,omitempty"`
	Snapshot    *snapStatus `json:"snapshot,omitempty"`

	TableBytes       int64 `json:"table_bytes"`
	TableBytesBefore int64 `json:"table_bytes_before"`
	TableBytesPeak   int64 `json:"table_bytes_peak"`
	TableBytesAfter  int64 `json:"table_bytes_after,omitempty"`
	// Heap: objects (heap_*) and spans in use (heap_inuse_*, HeapInuse),
	// now, before any traffic, the most of the once-a-second samples,
	// and at exit after a collection (see heapSample).
	HeapBytes       uint64 `json:"heap_bytes"`
	HeapBefore      uint64 `json:"heap_before"`
	HeapPeak        uint64 `json:"heap_peak"`
	HeapAfter       uint64 `json:"heap_after,omitempty"`
	HeapInuseBytes  uint64 `json:"heap_inuse_bytes"`
	HeapInuseBefore uint64 `json:"heap_inuse_before"`
	HeapInusePeak   uint64 `json:"heap_inuse_peak"`
	HeapInuseAfter  uint64 `json:"heap_inuse_after,omitempty"`
}

// removals is Stats' flows that left, by cause: the same numbers as the
// metrics' flowcache_removals_total{cause}.
type removals struct {
	Expired  uint64 `json:"expired"`
	Removed  uint64 `json:"removed"`
	Replaced uint64 `json:"replaced"`
	Evicted  uint64 `json:"evicted"`
	Cleared  uint64 `json:"cleared"`
}

func (f *forwarder) report() report {
	st := f.table.Stats()
	c := func(field func(*counters) *atomic.Uint64) uint64 { return f.sum(field) }
	r := report{
		In: f.o.in, Out: f.o.out, IO: f.o.io, Workers: len(f.workers),
		Seconds:        time.Since(f.start).Seconds(),
		ActiveSeconds:  f.activeSeconds(),
		CPUSeconds:     cpuSeconds() - f.cpuBefore,
		PacketsIn:      c(func(c *counters) *atomic.Uint64 { return &c.in }),
		PacketsOut:     c(func(c *counters) *atomic.Uint64 { return &c.out }),
		NotIP:          c(func(c *counters) *atomic.Uint64 { return &c.notIP }),
		Malformed:      c(func(c *counters) *atomic.Uint64 { return &c.malformed }),
		Oversize:       c(func(c *counters) *atomic.Uint64 { return &c.oversize }),
		DroppedFull:    c(func(c *counters) *atomic.Uint64 { return &c.droppedFull }),
		ForwardedFull:  c(func(c *counters) *atomic.Uint64 { return &c.forwardedFull }),
		SendErrors:     c(func(c *counters) *atomic.Uint64 { return &c.sendErrors }),
		SocketDrops:    f.drops,
		PPS:            f.pps,
		PeakPPS:        f.peakPPS,
		FullPolicy:     f.o.fullPolicy,
		Live:           st.Live,
		Limit:          st.Limit,
		PeakLive:       f.peak.Load(),
		FlowsInserted:  st.Inserts,
		FullRejections: st.FullRejections,
		Evictions:      st.Evicted,
		Removals: removals{
			Expired: st.Expired, Removed: st.Removed, Replaced: st.Replaced,
			Evicted: st.Evicted, Cleared: st.Cleared,
		},
		Hits:             st.Hits,
		Misses:           st.Misses,
		Expired:          st.Expired,
		Grows:            st.Grows,
		Shrinks:          st.Shrinks,
		Compactions:      st.Compactions,
		Moved:            st.Moved,
		TableBytes:       st.Bytes,
		TableBytesBefore: f.tableBefore,
		TableBytesPeak:   f.tablePeak,
		Replication:      f.repl.status(f.forwarding),
		Snapshot:         f.snap,
	}
	heap := readHeap()
	r.HeapBytes, r.HeapBefore, r.HeapPeak = heap.objects, f.heapBefore.objects, f.heapPeak.objects
	r.HeapInuseBytes, r.HeapInuseBefore, r.HeapInusePeak = heap.inuse, f.heapBefore.inuse, f.heapPeak.inuse
	if f.stopped {
		r.TableBytesAfter = f.tableAfter
		r.HeapAfter, r.HeapInuseAfter = f.heapAfter.objects, f.heapAfter.inuse
	}
	if r.ActiveSeconds > 0 {
		r.ActivePPS = math.Round(float64(r.PacketsIn) / r.ActiveSeconds)
	}
	return r
}

// statsLine is the -stats line.
func (f *forwarder) statsLine() string {
	r := f.report()
	return fmt.Sprintf("live %d/%d  hits %d  misses %d  full %d  evicted %d  expired %d | table %s  heap %s (in use %s) | %.0f pkt/s in, %d in, %d out, %d not IP",
		r.Live, r.Limit, r.Hits, r.Misses, r.FullRejections, r.Evictions, r.Expired,
		mib(r.TableBytes), mib(int64(r.HeapBytes)), mib(int64(r.HeapInuseBytes)), r.PPS, r.PacketsIn, r.PacketsOut, r.NotIP)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// dump writes the table's Dump, sorted by key, to -dump-file (replaced
// whole, through a rename, so a reader never sees half a dump) or stdout,
// in -dump-format.
func (f *forwarder) dump() error {
	rows := f.table.Dump()
	if f.o.dumpFile == "" {
		bw := bufio.NewWriter(os.Stdout)
		if err := writeDump(bw, f.table.Name(), rows, f.o.dumpFormat); err != nil {
			return err
		}
		return bw.Flush()
	}
	tmp := f.o.dumpFile + ".tmp"
	file, err := os.Create(tmp)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(file)
	err = writeDump(bw, f.table.Name(), rows, f.o.dumpFormat)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, f.o.dumpFile)
}

// writeDump writes rows in format:
//
//   - text: a "# NAME: N flows" line, then one flow a line,
//     "KEY  ACTION  hits=H  packets=P  bytes=B  state=0xS  last=RFC3339";
//   - json: one JSON object a line (JSON Lines), each a
//     flowcache.DumpRow: {"Key": "udp 198.19.0.1:5000 -> 198.18.0.1:5001",
//     "Reply": ..., "Paired": false, "Class": 0, "Value": {"Action":
//     "forward"}, "Hits": ..., "LastSeen": ..., "Packets": ..., "Bytes":
//     ..., "State": 1}. Keys are their text (FlowKey.MarshalText), which
//     reads back with UnmarshalText; a line per flow streams a dump of a
//     million flows and greps like the text one.
func writeDump(w io.Writer, name string, rows []flowcache.DumpRow[Flow], format string) error {
	switch format {
	case "text":
		fmt.Fprintf(w, "# %s: %d flows\n", name, len(rows))
		for _, r := range rows {
			_, err := fmt.Fprintf(w, "%s  %s  hits=%d  packets=%d  bytes=%d  state=%#x  last=%s\n",
				r.Key, r.Value.Action, r.Hits, r.Packets, r.Bytes, r.State, r.LastSeen.Format(time.RFC3339))
			if err != nil {
				return err
			}
		}
		return nil
	case "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false) // "->", not "-\u003e": the dump is for people and jq, not HTML
		for i := range rows {
			if err := enc.Encode(&rows[i]); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("dump format %q: want text or json", format)
}

// writeJSONFile replaces path with v as JSON, through a rename so that a
// reader never sees half a file.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeKeys writes keys sorted by FlowKey.Compare (the Dump order), one
// String a line: the format the forwarder and -keys-from share, so that
// the e2e test compares them with cmp.
func writeKeys(path string, keys []flowcache.FlowKey) error {
	slices.SortFunc(keys, flowcache.FlowKey.Compare)
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(file)
	for _, k := range keys {
		fmt.Fprintln(bw, k)
	}
	if err := bw.Flush(); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}
