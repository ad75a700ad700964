package replicate

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublisherConfig configures a Publisher. Name and Codec are required.
type PublisherConfig[V any] struct {
	// Name names the table's replication: its stream, subjects and lease
	// (stream.go). A follower of the same Name follows it.
	Name  string
	Codec Codec[V]
	// Interval is how often changes are flushed to the stream: a flow
	// that changes many times in an interval is sent once, as it is at
	// the flush. 0 means 100 ms.
	Interval time.Duration
	// Filter, when set, decides at the flush whether a flow not sent yet
	// starts replicating (only answered connections, say, so that a SYN
	// flood is not replicated). Once sent, a flow is kept up to date
	// until it leaves. It must not call the table.
	Filter func(e *flowcache.Entry[V]) bool
	// Queue is how many change notes the table keeps between two
	// flushes; past it notes are dropped, counted, and a resync sends
	// every flow again. 0 means 1<<16.
	Queue int
	// Refresh is how often flows that were seen since they were last
	// sent are sent again, so that their copies on a follower age as
	// they do here. 0 means a third of the table's shortest timeout, at
	// least Interval.
	Refresh time.Duration
	// LeaseTTL is the lease's lifetime: the publisher renews it every
	// third of it, and a follower that sees it lapse may promote. 0 means
	// 2 s. The lease bucket is created with it.
	LeaseTTL time.Duration
	// TombstoneTTL is how long the stream keeps the record of a flow that
	// left. 0 means 10 minutes.
	TombstoneTTL time.Duration
	// MinEpoch: the publisher's epoch is above both the lease's and this
	// (Promote passes the highest it has seen).
	MinEpoch uint64
	// Holder names this publisher in the lease; "" means host:pid.
	Holder string
	// Clock is the table's clock, for idle times; nil means time.Now.
	Clock func() time.Time
}

// Publisher streams a table's changes to JetStream (see the package
// documentation). It is started by NewPublisher and runs until Close, or
// until a newer epoch fences it.
type Publisher[V any] struct {
	t      *flowcache.Table[V]
	js     jetstream.JetStream
	r      replication
	kv     jetstream.KeyValue // the lease
	cfg    PublisherConfig[V]
	feed   *flowcache.Changes[V]
	prefix string
	epoch  uint64
	rev    uint64 // the lease's revision after our last write
	seed   maphash.Seed

	// The flusher's own.
	seq        uint64
	sent       map[uint64]int64 // hash of first key -> last-seen ms when last sent
	needResync bool
	lastResync time.Time // when the last resync's acknowledgements were in
	pending    []jetstream.PubAckFuture
	ackErr     error        // the flush's first failed acknowledgement
	purged     bool         // older epochs' records are purged from the stream
	maxFlush   atomic.Int64 // ns: the longest flush, from its first read to its last acknowledgement (tests)

	flushReq chan chan error
	stop     chan struct{}
	done     chan struct{}
	fenced   chan struct{}
	once     sync.Once
	err      atomic.Pointer[error]

	stats struct {
		published, filtered, failed, resyncs, bytes, flushes atomic.Uint64
	}
}

// NewPublisher takes the lease at a new epoch (one above the lease's and
// cfg.MinEpoch), attaches a change feed to t, sends every flow (a
// resync, so that a follower holds exactly this table), and then flushes
// changes every Interval until Close. The stream and the lease bucket
// are created if they are missing.
//
// The table's data path never waits for the network: changes wait in
// the feed's bounded queue for the flusher; a full queue or a failed
// publish costs a resync, not a wait.
func NewPublisher[V any](ctx context.Context, js jetstream.JetStream, t *flowcache.Table[V], cfg PublisherConfig[V]) (*Publisher[V], error) {
	if cfg.Codec == nil {
		return nil, errors.New("replicate: PublisherConfig.Codec is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	if cfg.TombstoneTTL <= 0 {
		cfg.TombstoneTTL = 10 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		cfg.Holder = host + ":" + strconv.Itoa(os.Getpid())
	}
	if cfg.Refresh <= 0 {
		shortest := t.TTL()
		for c := 1; c < flowcache.MaxClasses; c++ {
			if d := t.Timeout(c); d > 0 {
				shortest = min(shortest, d)
			}
		}
		cfg.Refresh = max(shortest/3, cfg.Interval)
	}
	r, err := ensureStream(ctx, js, cfg.Name, cfg.LeaseTTL)
	if err != nil {
		return nil, err
	}
	epoch, rev, err := takeLease(ctx, r, cfg.MinEpoch, cfg.Holder)
	if err != nil {
		return nil, fmt.Errorf("replicate: taking the lease: %w", err)
	}
	feed, err := t.Changes(cfg.Queue)
	if err != nil {
		return nil, err
	}
	p := &Publisher[V]{
		t: t, js: js, r: r, kv: r.lease, cfg: cfg, feed: feed, prefix: flowSubject(cfg.Name, epoch),
		epoch: epoch, rev: rev, seed: maphash.MakeSeed(), sent: map[uint64]int64{}, needResync: true,
		flushReq: make(chan chan error), stop: make(chan struct{}), done: make(chan struct{}), fenced: make(chan struct{}),
	}
	go p.run()
	return p, nil
}

// Epoch is the publisher's epoch: every record it sends carries it.
func (p *Publisher[V]) Epoch() uint64 { return p.epoch }

// Fenced is closed when a newer epoch took the lease: this publisher has
// stopped, and Err says ErrFenced.
func (p *Publisher[V]) Fenced() <-chan struct{} { return p.fenced }

// Err is why the publisher stopped, or nil while it runs.
func (p *Publisher[V]) Err() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

// Flush sends what changed now, instead of at the next interval, and
// waits until the stream has acknowledged it (or ctx ends).
func (p *Publisher[V]) Flush(ctx context.Context) error {
	ch := make(chan error, 1)
	select {
	case p.flushReq <- ch:
	case <-p.done:
		return p.stopped()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Publisher[V]) stopped() error {
	if err := p.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// Close flushes once more, stops the flusher and detaches the feed. The
// lease is left to lapse, so a standby does not take over a publisher
// that is only restarting before its TTL. Idempotent.
func (p *Publisher[V]) Close() error {
	p.once.Do(func() { close(p.stop) })
	<-p.done
	if err := p.Err(); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

func (p *Publisher[V]) fail(err error) {
	p.err.CompareAndSwap(nil, &err)
}

func (p *Publisher[V]) run() {
	defer close(p.done)
	defer p.feed.Close()
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	renewDone := make(chan struct{})
	defer close(renewDone)
	wg.Go(func() { p.keepLease(renewDone) })
	refresh := time.NewTicker(p.cfg.Refresh)
	defer refresh.Stop()
	p.flush(false)
	for {
		select {
		case <-p.stop:
			p.flush(false)
			p.fail(ErrClosed)
			return
		case ch := <-p.flushReq:
			ch <- p.flush(false)
		case <-tick.C:
			p.flush(false)
		case <-refresh.C:
			p.flush(true)
		case <-p.fenced:
			return
		}
	}
}

// keepLease renews the lease every third of its TTL, apart from the
// flusher, so that a long flush does not let it lapse; when another
// publisher has taken it, the publisher is fenced and stops.
func (p *Publisher[V]) keepLease(done <-chan struct{}) {
	tick := time.NewTicker(p.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if err := p.renew(); err != nil {
			p.fail(err)
			close(p.fenced)
			return
		}
	}
}

// renew rewrites the lease against the revision of our last write. A
// lost compare-and-set means another publisher took it: fenced. A
// network error is tried again at the next tick.
func (p *Publisher[V]) renew() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.LeaseTTL/3)
	defer cancel()
	rev, err := p.kv.Update(ctx, leaseKey, leaseValue(p.epoch, p.cfg.Holder), p.rev)
	if err == nil {
		p.rev = rev
		return nil
	}
	if !isWrongSequence(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil // the broker is away: try again at the next tick
	}
	// Our revision is not the lease's: an update that timed out but was
	// stored, a lease that lapsed while the broker was away, or another
	// publisher. Only a newer epoch fences.
	e, err := p.kv.Get(ctx, leaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		if rev, err := p.kv.Create(ctx, leaseKey, leaseValue(p.epoch, p.cfg.Holder)); err == nil {
			p.rev = rev
		}
		return nil
	case err != nil:
		return nil
	case leaseEpoch(e.Value()) > p.epoch:
		return fmt.Errorf("%w: epoch %d lost its lease to epoch %d", ErrFenced, p.epoch, leaseEpoch(e.Value()))
	case string(e.Value()) == string(leaseValue(p.epoch, p.cfg.Holder)):
		p.rev = e.Revision()
	}
	return nil
}

// flush sends what changed (or everything, when a resync is due) and
// waits for the stream's acknowledgements. With refresh, it also sends
// the flows seen since they were last sent.
func (p *Publisher[V]) flush(refresh bool) error {
	start := time.Now()
	// The first resync at once; after it, at most one per ten intervals
	// from the end of the last, so that an overload (notes lost, acks
	// late) does not turn into a storm of resyncs that feeds it. Until
	// then Drain sends what the queue kept.
	resync := p.needResync || p.feed.Lost()
	if resync && (p.lastResync.IsZero() || time.Since(p.lastResync) >= 10*p.cfg.Interval) {
		p.resync()
	} else {
		resync = false
		p.feed.Drain(p.change)
	}
	if refresh {
		p.refresh()
	}
	p.await()
	err := p.ackErr
	p.ackErr = nil
	if resync {
		p.lastResync = time.Now()
		if err == nil && !p.purged {
			// The stream holds every flow under this epoch's subjects:
			// older epochs' records can go. Tried again after the next
			// resync if it fails.
			ctx, cancel := context.WithTimeout(context.Background(), p.ackPatience())
			p.purged = purgeOlder(ctx, p.r, p.cfg.Name, p.epoch) == nil
			cancel()
		}
	}
	if d := int64(time.Since(start)); d > p.maxFlush.Load() {
		p.maxFlush.Store(d)
	}
	p.stats.flushes.Add(1)
	return err
}

func (p *Publisher[V]) hash(k *flowcache.FlowKey) uint64 {
	var kb [40]byte
	return maphash.Bytes(p.seed, appendKey(kb[:0], k))
}

// change sends one flow the feed reported.
func (p *Publisher[V]) change(ch flowcache.Change[V]) {
	h := p.hash(&ch.Key)
	_, was := p.sent[h]
	if ch.Flow == nil {
		if was {
			// A flow never sent (filtered out) leaves no tombstone.
			p.sendGone(&ch.Key, ch.Cause)
			delete(p.sent, h)
		}
		return
	}
	if !was && p.cfg.Filter != nil && !p.cfg.Filter(ch.Flow) {
		p.stats.filtered.Add(1)
		return
	}
	p.sendFlow(ch.Flow, h)
}

// resync sends every flow the filter admits, then the marker that tells
// followers to drop the flows of this epoch or older the resync did not
// send: those left while notes were lost.
func (p *Publisher[V]) resync() {
	p.needResync = false
	start := p.seq + 1
	old := p.sent
	p.sent = make(map[uint64]int64, len(old))
	p.feed.Resync(func(ch flowcache.Change[V]) {
		h := p.hash(&ch.Key)
		if _, was := old[h]; !was && p.cfg.Filter != nil && !p.cfg.Filter(ch.Flow) {
			p.stats.filtered.Add(1)
			return
		}
		p.sendFlow(ch.Flow, h)
	})
	p.seq++ // the marker's own message ID
	p.publish(syncSubject(p.cfg.Name, p.epoch), appendSync(nil, p.epoch, start), 0)
	p.stats.resyncs.Add(1)
}

// refresh sends again the flows seen since they were last sent.
func (p *Publisher[V]) refresh() {
	for e := range p.t.All() {
		k := e.Key()
		h := p.hash(&k)
		if ls, ok := p.sent[h]; ok && e.LastSeen().UnixMilli() > ls {
			p.sendFlow(e, h)
		}
	}
}

func (p *Publisher[V]) sendFlow(e *flowcache.Entry[V], h uint64) {
	var r record[V]
	r.fromEntry(e, p.cfg.Clock())
	p.seq++
	r.epoch, r.seq = p.epoch, p.seq
	p.sent[h] = e.LastSeen().UnixMilli()
	p.publish(subjectFor(p.prefix, &r.key), appendRecord(nil, p.cfg.Codec, &r), 0)
}

func (p *Publisher[V]) sendGone(k *flowcache.FlowKey, why flowcache.Cause) {
	if why == 0 {
		why = flowcache.Removed
	}
	p.seq++
	r := record[V]{op: opGone, cause: why, epoch: p.epoch, seq: p.seq, key: *k}
	p.publish(subjectFor(p.prefix, k), appendRecord(nil, p.cfg.Codec, &r), p.cfg.TombstoneTTL)
}

// maxInFlight bounds the acknowledgements a flush leaves outstanding: a
// resync of a large table waits for them every so many records rather
// than letting the client stall (and fail) its asynchronous publishes.
const maxInFlight = 1024

// publish sends one message asynchronously, its ID the epoch and
// sequence, so that a retry the client makes is stored once. A publish
// that fails schedules a resync: the stream keeps one record per flow,
// so sending an old record again could overwrite a newer one.
func (p *Publisher[V]) publish(subject string, data []byte, ttl time.Duration) {
	if len(p.pending) >= maxInFlight {
		p.await()
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(strconv.FormatUint(p.epoch, 10) + "." + strconv.FormatUint(p.seq, 10))}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data}, opts...)
	if err != nil {
		p.stats.failed.Add(1)
		p.needResync = true
		return
	}
	p.pending = append(p.pending, f)
	p.stats.published.Add(1)
	p.stats.bytes.Add(uint64(len(data) + len(subject)))
}

// ackPatience is how long await waits without any acknowledgement
// coming in before it gives up on the rest: the broker is away, or the
// connection died. While acknowledgements keep coming, however slowly
// (a loaded machine, a large resync), it waits.
func (p *Publisher[V]) ackPatience() time.Duration { return max(10*p.cfg.Interval, 2*time.Second) }

// await waits for every pending acknowledgement, as long as they keep
// coming; a failed one, or the rest once none came for ackPatience,
// schedule a resync, and the first failure is kept for flush to return.
func (p *Publisher[V]) await() {
	if len(p.pending) == 0 {
		return
	}
	patience := p.ackPatience()
	idle := time.NewTimer(patience)
	defer idle.Stop()
	for i, f := range p.pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.stats.failed.Add(1)
			p.needResync = true
			if p.ackErr == nil {
				p.ackErr = err
			}
		case <-idle.C:
			left := len(p.pending) - i
			p.stats.failed.Add(uint64(left))
			p.needResync = true
			if p.ackErr == nil {
				p.ackErr = fmt.Errorf("replicate: no acknowledgement from the stream for %v (%d records unacknowledged)", patience, left)
			}
			clear(p.pending)
			p.pending = p.pending[:0]
			return
		}
		idle.Reset(patience)
	}
	clear(p.pending)
	p.pending = p.pending[:0]
}

// Stats counts what the publisher did.
func (p *Publisher[V]) Stats() Stats {
	fs := p.feed.Stats()
	return Stats{
		Role:      "publisher",
		Name:      p.cfg.Name,
		Epoch:     p.epoch,
		Published: p.stats.published.Load(),
		Coalesced: fs.Noted - min(fs.Reported, fs.Noted),
		Filtered:  p.stats.filtered.Load(),
		Dropped:   fs.Dropped + p.stats.failed.Load(),
		Resyncs:   p.stats.resyncs.Load(),
		WireBytes: p.stats.bytes.Load(),
		Flushes:   p.stats.flushes.Load(),
	}
}
