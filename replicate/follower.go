package replicate

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/nats-io/nats.go/jetstream"
)

// FollowerConfig configures a Follower. Name and Codec are required.
type FollowerConfig[V any] struct {
	Name  string // the publisher's Name
	Codec Codec[V]
	// LeaseTTL is how long the lease may go unrenewed before Lapsed is
	// closed; 0 means 2 s. Use the publisher's.
	LeaseTTL time.Duration
	// TombstoneHorizon is how long the follower remembers a flow that
	// left, to refuse a late record of it; 0 means 1 minute.
	TombstoneHorizon time.Duration
}

// version orders one flow's records: the publisher's epoch, then its
// sequence.
type version struct{ epoch, seq uint64 }

func (a version) less(b version) bool {
	return a.epoch < b.epoch || a.epoch == b.epoch && a.seq < b.seq
}

// held is what the follower knows of a flow it applied, by first key.
type held struct {
	v      version
	vh     uint64 // valueHash
	reply  flowcache.FlowKey
	paired bool
}

// Follower applies a publisher's stream to a standby table (see the
// package documentation): it catches up from the stream's last record of
// every flow, says so (CaughtUp), then follows, until Close or Promote.
type Follower[V any] struct {
	t   *flowcache.Table[V]
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	cfg FollowerConfig[V]

	// The apply loop's own (mu guards them against Stats and Promote).
	mu       sync.Mutex
	flows    map[flowcache.FlowKey]held              // live flows, by first key
	owner    map[flowcache.FlowKey]flowcache.FlowKey // a pair's reply key -> its first key
	tombs    [2]map[flowcache.FlowKey]version        // flows that left: this horizon's and the last
	tombsAt  time.Time
	maxEpoch atomic.Uint64
	lags     lagRing
	seed     maphash.Seed
	vbuf     []byte

	// crashAfter, when set (tests only), stops the apply loop after so
	// many records, as if the process had died there.
	crashAfter uint64

	at atomic.Uint64 // the stream sequence of the last record applied

	caughtUp chan struct{}
	upOnce   sync.Once
	lapsed   chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	closed   atomic.Bool

	stats struct {
		applied, stale, fenced, invalid, removed atomic.Uint64
	}
}

// NewFollower starts following: it reads the stream's last record of
// every flow (and the last resync marker), applying each to t, closes
// CaughtUp once it has read every record that was in the stream, and then
// applies new records as they come. t is the standby's table; the
// follower is its only writer, beside t's own expiry passes (flows age on
// the standby as they did on the primary, and the publisher sends
// active flows again before they could expire).
func NewFollower[V any](ctx context.Context, js jetstream.JetStream, t *flowcache.Table[V], cfg FollowerConfig[V]) (*Follower[V], error) {
	if cfg.Codec == nil {
		return nil, errors.New("replicate: FollowerConfig.Codec is required")
	}
	return newFollower(t, cfg).follow(ctx, js)
}

// follow starts f following the stream on js.
func (f *Follower[V]) follow(ctx context.Context, js jetstream.JetStream) (*Follower[V], error) {
	cfg := f.cfg
	r, err := ensureStream(ctx, js, cfg.Name, cfg.LeaseTTL)
	if err != nil {
		return nil, err
	}
	f.js, f.kv = js, r.lease
	if e, _, err := readLease(ctx, r.lease); err == nil {
		f.maxEpoch.Store(e)
	}
	stream := r.stream
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"flows." + cfg.Name + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		f.markCaughtUp()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go f.run(runCtx, cons, info.State.LastSeq)
	return f, nil
}

// newFollower is a follower's state, applying to t, not yet following.
func newFollower[V any](t *flowcache.Table[V], cfg FollowerConfig[V]) *Follower[V] {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	if cfg.TombstoneHorizon <= 0 {
		cfg.TombstoneHorizon = time.Minute
	}
	return &Follower[V]{
		t: t, cfg: cfg,
		flows: map[flowcache.FlowKey]held{}, owner: map[flowcache.FlowKey]flowcache.FlowKey{},
		tombs:   [2]map[flowcache.FlowKey]version{{}, {}},
		tombsAt: time.Now(), seed: maphash.MakeSeed(),
		caughtUp: make(chan struct{}), lapsed: make(chan struct{}), done: make(chan struct{}),
		cancel: func() {},
	}
}

// CaughtUp is closed once the follower has applied every record that was
// in the stream when it started.
func (f *Follower[V]) CaughtUp() <-chan struct{} { return f.caughtUp }

// Lapsed is closed when the publisher's lease has not been renewed for
// LeaseTTL (or is gone): the primary is presumed dead, and the program
// may Promote.
func (f *Follower[V]) Lapsed() <-chan struct{} { return f.lapsed }

func (f *Follower[V]) markCaughtUp() { f.upOnce.Do(func() { close(f.caughtUp) }) }

// run applies what cons delivers until ctx ends. It has caught up once
// it has applied the record at sequence last, the stream's last when the
// follower started, or a later one (a record superseded since comes in
// its newer form), or once the consumer says nothing is pending. A
// publisher that never pauses (refreshes, a busy table) may keep the
// second from ever happening; the first always does.
func (f *Follower[V]) run(ctx context.Context, cons jetstream.Consumer, last uint64) {
	defer close(f.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	// The lease watcher stops with the apply loop, however it ends.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { f.watchLease(ctx) })
	// Batches larger than the default 500: a catch-up is one long read.
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return
	}
	go func() { <-ctx.Done(); it.Stop() }()
	var n uint64
	for {
		m, err := it.Next()
		if err != nil {
			return
		}
		md, err := m.Metadata()
		if err != nil {
			f.stats.invalid.Add(1)
			continue
		}
		f.Apply(m.Data(), md.Timestamp)
		f.lags.add(time.Since(md.Timestamp))
		f.at.Store(md.Sequence.Stream)
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			f.markCaughtUp()
		}
		if n++; n == f.crashAfter {
			return // a test's crash (export_test.go)
		}
	}
}

// watchLease reads the lease every quarter TTL: its epoch fences older
// publishers, and a lease that stops changing for a TTL has lapsed.
func (f *Follower[V]) watchLease(ctx context.Context) {
	tick := time.NewTicker(f.cfg.LeaseTTL / 4)
	defer tick.Stop()
	var lastRev uint64
	changed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c, cancel := context.WithTimeout(ctx, f.cfg.LeaseTTL/4)
		epoch, rev, err := readLease(c, f.kv)
		cancel()
		if err != nil {
			continue // the broker is away: nothing can be concluded
		}
		f.raiseEpoch(epoch)
		if rev != lastRev {
			lastRev, changed = rev, time.Now()
		}
		if rev == 0 || time.Since(changed) > f.cfg.LeaseTTL {
			select {
			case <-f.lapsed:
			default:
				close(f.lapsed)
			}
		}
	}
}

func (f *Follower[V]) raiseEpoch(e uint64) {
	for {
		cur := f.maxEpoch.Load()
		if e <= cur || f.maxEpoch.CompareAndSwap(cur, e) {
			return
		}
	}
}

// Apply applies one record, as the stream delivered it, stored at
// stored (the stream's timestamp: a record's idle time counts from it).
// A record of an epoch older than the newest seen (in records or in the
// lease) is refused and counted as fenced; one no newer than what the
// follower holds for its flow is a duplicate or stale and is ignored;
// one that does not decode is counted as invalid and changes nothing.
// The follower's own loop calls it; it is exported for tests that
// deliver records in their own order.
func (f *Follower[V]) Apply(data []byte, stored time.Time) error {
	var r record[V]
	if err := decodeRecord(data, f.cfg.Codec, &r); err != nil {
		f.stats.invalid.Add(1)
		return err
	}
	if r.epoch < f.maxEpoch.Load() {
		f.stats.fenced.Add(1)
		return nil
	}
	f.raiseEpoch(r.epoch)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ageTombs()
	v := version{r.epoch, r.seq}
	switch r.op {
	case opSync:
		f.sync(v)
		return nil
	case opGone:
		return f.gone(&r, v)
	}
	return f.flow(&r, v, stored)
}

// known is the newest version the follower has of the flow whose first
// key is k, live or gone.
func (f *Follower[V]) known(k flowcache.FlowKey) (version, bool) {
	if h, ok := f.flows[k]; ok {
		return h.v, true
	}
	if v, ok := f.tombs[0][k]; ok {
		return v, true
	}
	v, ok := f.tombs[1][k]
	return v, ok
}

func (f *Follower[V]) flow(r *record[V], v version, stored time.Time) error {
	if cur, ok := f.known(r.key); ok && !cur.less(v) {
		f.stats.stale.Add(1)
		return nil
	}
	// The flows this record displaces: others that hold one of its keys.
	// Each must be older than the record, or the record is stale.
	var victims []flowcache.FlowKey
	for _, k := range []flowcache.FlowKey{r.key, r.reply}[:1+b2i(r.paired)] {
		first := k
		if o, ok := f.owner[k]; ok {
			first = o
		}
		if first == r.key {
			continue
		}
		if h, ok := f.flows[first]; ok {
			if !h.v.less(v) {
				f.stats.stale.Add(1)
				return nil
			}
			victims = append(victims, first)
		}
	}
	row := r.row(stored)
	if _, ok := f.flows[r.key]; !ok && f.t.Len() > len(f.flows) {
		// The table holds flows the follower does not know (applied by
		// a follower before it): whatever is under the key now is no
		// flow of this record, and Restore must not update it in place.
		f.t.Remove(r.key)
	}
	vh := f.valueHash(r)
	if h, ok := f.flows[r.key]; ok && (h.paired != r.paired || h.reply != r.reply || h.vh != vh) {
		// Another flow under the same first key (the primary replaced
		// it): remove it, so Restore stores this one instead of updating.
		f.t.Remove(r.key)
		f.forget(r.key, v)
	}
	if _, _, err := f.t.Restore(row); err != nil {
		f.stats.invalid.Add(1)
		return fmt.Errorf("replicate: apply %v: %w", r.key, err)
	}
	for _, k := range victims {
		f.forget(k, v)
	}
	f.flows[r.key] = held{v: v, reply: r.reply, paired: r.paired, vh: vh}
	delete(f.tombs[0], r.key)
	delete(f.tombs[1], r.key)
	if r.paired {
		f.owner[r.reply] = r.key
	}
	f.stats.applied.Add(1)
	return nil
}

// valueHash hashes r's value as the codec encodes it: the follower keeps
// that, not the value, to tell an update of a flow from another flow
// under the same keys.
func (f *Follower[V]) valueHash(r *record[V]) uint64 {
	f.vbuf = f.cfg.Codec.Append(f.vbuf[:0], &r.value)
	return maphash.Bytes(f.seed, f.vbuf)
}

func (f *Follower[V]) gone(r *record[V], v version) error {
	if cur, ok := f.known(r.key); ok && !cur.less(v) {
		f.stats.stale.Add(1)
		return nil
	}
	// Remove the flow under the key unless the key is the reply of a
	// pair the follower holds (a newer flow than the one that left). A
	// flow the follower does not know (applied by a follower before this
	// one) goes too.
	if o, ok := f.owner[r.key]; !ok || o == r.key {
		if f.t.Remove(r.key) {
			f.stats.removed.Add(1)
		}
	}
	f.forget(r.key, v)
	f.stats.applied.Add(1)
	return nil
}

// forget records that the flow whose first key is k left, at v.
func (f *Follower[V]) forget(k flowcache.FlowKey, v version) {
	if h, ok := f.flows[k]; ok {
		if h.paired && f.owner[h.reply] == k {
			delete(f.owner, h.reply)
		}
		delete(f.flows, k)
	}
	f.tombs[0][k] = v
}

// sync drops the flows a resync did not send again: of its epoch below
// its first sequence, or of an older epoch.
func (f *Follower[V]) sync(v version) {
	var gone []flowcache.FlowKey
	for k, h := range f.flows {
		if h.v.less(v) {
			gone = append(gone, k)
		}
	}
	slices.SortFunc(gone, flowcache.FlowKey.Compare)
	for _, k := range gone {
		f.t.Remove(k)
		f.forget(k, v)
		f.stats.removed.Add(1)
	}
}

// ageTombs moves to the next tombstone horizon when this one is over:
// tombstones older than two horizons are forgotten.
func (f *Follower[V]) ageTombs() {
	if time.Since(f.tombsAt) < f.cfg.TombstoneHorizon {
		return
	}
	f.tombs[1], f.tombs[0] = f.tombs[0], map[flowcache.FlowKey]version{}
	f.tombsAt = time.Now()
}

// Close stops following. The table keeps what it holds. Idempotent.
func (f *Follower[V]) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.cancel()
	if f.js != nil {
		<-f.done
	}
	return nil
}

// Promote stops following and starts publishing the table, at an epoch
// above every epoch the follower has seen. It first applies what the
// stream holds now (the old primary's last flush may be stored and not
// yet applied; it waits at most LeaseTTL for it, then goes on with what
// it has); then the lease is taken (created if it lapsed, swapped
// otherwise), which fences the old publisher, and followers refuse its
// records from then on. cfg.Name and cfg.Codec default to the
// follower's.
func (f *Follower[V]) Promote(ctx context.Context, cfg PublisherConfig[V]) (*Publisher[V], error) {
	f.drain(ctx)
	f.Close()
	if cfg.Name == "" {
		cfg.Name = f.cfg.Name
	}
	if cfg.Codec == nil {
		cfg.Codec = f.cfg.Codec
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = f.cfg.LeaseTTL
	}
	cfg.MinEpoch = max(cfg.MinEpoch, f.maxEpoch.Load())
	return NewPublisher(ctx, f.js, f.t, cfg)
}

// drain waits until the follower has applied the stream's last record as
// of now (or one after it), for at most LeaseTTL: that long only if the
// record vanished meanwhile (a purge, a tombstone's TTL). A record's
// NumPending cannot stand in: a follower that had nothing pending a
// moment ago may not have seen the primary's last flush yet.
func (f *Follower[V]) drain(ctx context.Context) {
	if f.js == nil || f.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.LeaseTTL)
	defer cancel()
	stream, err := f.js.Stream(ctx, streamName(f.cfg.Name))
	if err != nil {
		return
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for f.at.Load() < info.State.LastSeq {
		select {
		case <-ctx.Done():
			return
		case <-f.done:
			return
		case <-tick.C:
		}
	}
}

// Stats counts what the follower did.
func (f *Follower[V]) Stats() Stats {
	p50, p99 := f.lags.percentiles()
	f.mu.Lock()
	n := len(f.flows)
	f.mu.Unlock()
	st := Stats{
		Role:     "follower",
		Name:     f.cfg.Name,
		Epoch:    f.maxEpoch.Load(),
		Applied:  f.stats.applied.Load(),
		Stale:    f.stats.stale.Load(),
		Fenced:   f.stats.fenced.Load(),
		Invalid:  f.stats.invalid.Load(),
		Removed:  f.stats.removed.Load(),
		Flows:    n,
		LagP50:   p50,
		LagP99:   p99,
		CaughtUp: isClosed(f.caughtUp),
	}
	return st
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lagRing keeps the last lags, for percentiles.
type lagRing struct {
	mu   sync.Mutex
	lags [4096]time.Duration
	n    int
}

func (l *lagRing) add(d time.Duration) {
	l.mu.Lock()
	l.lags[l.n%len(l.lags)] = d
	l.n++
	l.mu.Unlock()
}

func (l *lagRing) percentiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	s := slices.Clone(l.lags[:min(l.n, len(l.lags))])
	l.mu.Unlock()
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100]
}
