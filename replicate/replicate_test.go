package replicate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/nats-io/nats.go"
)

// churner changes a primary table the way a forwarder does: new flows and
// pairs, removals, state swaps, class moves, expiries. Every flow it
// stores has a value no other flow had (Mark), so a test can tell flows
// apart across incarnations of one key.
type churner struct {
	t    *flowcache.Table[Flow]
	rng  *rand.Rand
	keys int
	mark uint32
	mu   sync.Mutex
	ever map[flowcache.FlowKey]map[uint32]bool // every (key, mark) ever stored
}

func newChurner(t *flowcache.Table[Flow], keys int, seed uint64) *churner {
	return &churner{t: t, rng: rand.New(rand.NewPCG(seed, 9)), keys: keys, ever: map[flowcache.FlowKey]map[uint32]bool{}}
}

func (c *churner) store(k flowcache.FlowKey, pair bool) {
	c.mark++
	v := Flow{Port: uint16(c.mark), Mark: c.mark}
	c.mu.Lock()
	if c.ever[k] == nil {
		c.ever[k] = map[uint32]bool{}
	}
	c.ever[k][c.mark] = true
	c.mu.Unlock()
	if pair {
		c.t.InsertPair(k, k.Reverse(), v)
	} else {
		c.t.Insert(k, v)
	}
}

func (c *churner) step() {
	k := key(c.rng.IntN(c.keys))
	switch r := c.rng.IntN(20); {
	case r < 5:
		c.store(k, false)
	case r < 8:
		c.store(k, true)
	case r < 10:
		c.t.Remove(k)
	case r < 12:
		if e, ok := c.t.Get(k); ok {
			c.t.SetClass(e, c.rng.IntN(3))
		}
	case r < 13:
		c.t.Expire(time.Now())
	default:
		if e, ok := c.t.Get(k); ok {
			s := e.State()
			e.CompareAndSwapState(s, s+1)
		}
	}
}

func (c *churner) run(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		for range 50 {
			c.step()
		}
		time.Sleep(time.Millisecond)
	}
}

func pubConfig() PublisherConfig[Flow] {
	c, _ := Binary[Flow](1)
	return PublisherConfig[Flow]{Name: "t", Codec: c, Interval: 20 * time.Millisecond, LeaseTTL: time.Second}
}

func folConfig() FollowerConfig[Flow] {
	c, _ := Binary[Flow](1)
	return FollowerConfig[Flow]{Name: "t", Codec: c, LeaseTTL: time.Second}
}

func startPublisher(t *testing.T, js jsConn, tb *flowcache.Table[Flow], cfg PublisherConfig[Flow]) *Publisher[Flow] {
	t.Helper()
	p, err := NewPublisher(ctxFor(t), js, tb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func startFollower(t *testing.T, js jsConn, tb *flowcache.Table[Flow], cfg FollowerConfig[Flow]) *Follower[Flow] {
	t.Helper()
	f, err := NewFollower(ctxFor(t), js, tb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func caughtUp(t *testing.T, f *Follower[Flow]) {
	t.Helper()
	await(t, "the follower catches up", f.CaughtUp(), func() any { return f.Stats() })
}

// converge flushes the publisher and waits until the follower's table
// equals the primary's.
func converge(t *testing.T, p *Publisher[Flow], primary, standby *flowcache.Table[Flow]) {
	t.Helper()
	ctx := ctxFor(t)
	waitFor(t, "follower equals primary", func() error {
		if err := p.Flush(ctx); err != nil {
			return err
		}
		return equalTables(primary, standby, p.longestFlush()+time.Millisecond)
	})
}

// TestEqualityUnderChurn: under inserts, pairs, removals, class and state
// changes and expiries, the follower's table equals the primary's once
// caught up, last-seen times within a tick.
func TestEqualityUnderChurn(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 10000), realTable(t, 10000)
	ch := newChurner(primary, 3000, 1)
	for range 2000 {
		ch.step()
	}
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	f := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f)
	ch.run(time.Second)
	converge(t, p, primary, standby)
	if st := f.Stats(); st.Applied == 0 || st.Invalid != 0 || st.Fenced != 0 {
		t.Errorf("follower stats %+v", st)
	}
	if st := p.Stats(); st.Published == 0 || st.Coalesced == 0 || st.Dropped != 0 {
		t.Errorf("publisher stats %+v: want coalesced changes, no drops", st)
	}
}

// TestFilter: flows the filter refuses never reach the follower, nor
// their tombstones.
func TestFilter(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 1000), realTable(t, 1000)
	cfg := pubConfig()
	cfg.Filter = func(e *flowcache.Entry[Flow]) bool { return e.State() != 0 } // answered only
	p := startPublisher(t, b.connect(t), primary, cfg)
	f := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f)
	for i := range 100 {
		e, _ := primary.Insert(key(i), Flow{Port: uint16(i)})
		if i%10 == 0 {
			e.CompareAndSwapState(0, 1)
		}
	}
	p.Flush(ctxFor(t))
	for i := range 100 {
		if i%10 != 0 {
			primary.Remove(key(i)) // the flood leaves: no tombstones
		}
	}
	converge(t, p, primary, standby)
	if st := p.Stats(); st.Filtered != 90 || st.Published != 10+1 {
		t.Errorf("publisher stats %+v: want 90 filtered, 10 flows and one resync marker published", st)
	}
}

// TestPublisherKilledMidFlush: the publisher's connection dies in the
// middle of a flush. Every flow the follower holds was live on the
// primary at some point, and no flow whose removal was published before
// comes back.
func TestPublisherKilledMidFlush(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 50000), realTable(t, 50000)
	nc, err := nats.Connect(b.url())
	if err != nil {
		t.Fatal(err)
	}
	js := jsOf(t, nc)
	ch := newChurner(primary, 2000, 2)
	p := startPublisher(t, js, primary, pubConfig())
	ch.run(300 * time.Millisecond)
	if err := p.Flush(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	published := primary.Dump()
	// Remove half of them, and publish the removals.
	removed := map[flowcache.FlowKey]uint32{}
	for i, r := range published {
		if i%2 == 0 {
			primary.Remove(r.Key)
			removed[r.Key] = r.Value.Mark
		}
	}
	if err := p.Flush(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	// A large batch, and the connection dies while it is sent.
	for i := range 6000 {
		ch.store(key(10000+i), i%2 == 0)
	}
	go func() { time.Sleep(5 * time.Millisecond); nc.Close() }()
	p.Flush(context.Background())
	f := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f)
	for _, r := range standby.Dump() {
		if !ch.ever[r.Key][r.Value.Mark] {
			t.Fatalf("the follower holds %v mark %d, which the primary never had", r.Key, r.Value.Mark)
		}
		if m, ok := removed[r.Key]; ok && m == r.Value.Mark {
			t.Fatalf("%v mark %d came back after its removal was published", r.Key, m)
		}
	}
	t.Logf("follower holds %d flows after the kill", standby.Len())
}

// TestBrokerRestart: the broker restarts mid-stream on its file store;
// the publisher resumes and, once it is back, the follower equals the
// primary.
func TestBrokerRestart(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 10000), realTable(t, 10000)
	ch := newChurner(primary, 2000, 3)
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	f := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f)
	ch.run(200 * time.Millisecond)
	b.stop()
	ch.run(300 * time.Millisecond) // changes while the broker is away
	b.start()
	ch.run(200 * time.Millisecond)
	converge(t, p, primary, standby)
	// The client may have buffered the publishes while the broker was
	// away and sent them again on reconnection (stored once each, by
	// their message IDs), or they failed and a resync sent every flow.
	t.Logf("publisher stats %+v", p.Stats())
}

// captured is every message the publisher sent, in order, as core NATS
// delivered it to a plain subscriber.
func capture(t *testing.T, b *broker) func() [][]byte {
	nc, err := nats.Connect(b.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var msgs [][]byte
	if _, err := nc.Subscribe("flows.t.>", func(m *nats.Msg) {
		mu.Lock()
		msgs = append(msgs, m.Data)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	return func() [][]byte {
		nc.Flush()
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), msgs...)
	}
}

// TestDeliveryFaults: every record delivered twice, and all of them in a
// random order with duplicates: the follower ends equal to the primary,
// and counts what it ignored.
func TestDeliveryFaults(t *testing.T) {
	b := startBroker(t)
	primary := realTable(t, 10000)
	got := capture(t, b)
	ch := newChurner(primary, 1500, 4)
	for range 1000 {
		ch.step()
	}
	start := time.Now()
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	ch.run(500 * time.Millisecond)
	if err := p.Flush(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	waitFor(t, "the capture has every record", func() error {
		msgs = got()
		if n := p.Stats().Published; uint64(len(msgs)) != n {
			return fmt.Errorf("%d of %d records captured", len(msgs), n)
		}
		return nil
	})
	// Every record is applied as if stored now: a follower's copy is
	// younger than the primary's by at most the time since the first read.
	now := time.Now()
	late := now.Sub(start)
	t.Run("twice", func(t *testing.T) {
		standby := realTable(t, 10000)
		f := newFollower(standby, folConfig())
		for _, m := range msgs {
			f.Apply(m, now)
			f.Apply(m, now)
		}
		if err := equalTables(primary, standby, late); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(); st.Stale < uint64(len(msgs))-1 {
			t.Errorf("%d records delivered twice, %d ignored as stale", len(msgs), st.Stale)
		}
	})
	t.Run("reordered", func(t *testing.T) {
		standby := realTable(t, 10000)
		f := newFollower(standby, folConfig())
		order := rand.New(rand.NewPCG(5, 5)).Perm(len(msgs))
		// The resync markers go last: a marker drops what its resync did
		// not send, which is right only once the resync's records are in.
		var markers [][]byte
		for _, i := range order {
			if msgs[i][2]>>4 == byte(opSync) {
				markers = append(markers, msgs[i])
				continue
			}
			f.Apply(msgs[i], now)
			if i%3 == 0 {
				f.Apply(msgs[order[i]], now) // and a stale one again
			}
		}
		for _, m := range markers {
			f.Apply(m, now)
		}
		if err := equalTables(primary, standby, late); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(); st.Stale == 0 {
			t.Errorf("stats %+v: reordered delivery ignored nothing as stale", st)
		}
	})
}

// TestFollowerRestartMidCatchUp: a follower that dies part way through
// its catch-up (its apply loop stops after a third of the stream's
// records), and a new one on the same table, end equal to the primary.
func TestFollowerRestartMidCatchUp(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 20000), realTable(t, 20000)
	ch := newChurner(primary, 6000, 6)
	for range 8000 {
		ch.step()
	}
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	if err := p.Flush(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	n := uint64(primary.Len() / 3)
	f, err := newCrashingFollower(ctxFor(t), b.connect(t), standby, folConfig(), n)
	if err != nil {
		t.Fatal(err)
	}
	await(t, "the first follower dies", f.stopped(), func() any { return f.Stats() })
	st := f.Stats()
	f.Close()
	if st.CaughtUp || st.Applied+st.Stale+st.Fenced+st.Invalid != n || standby.Len() >= primary.Len() {
		t.Fatalf("the first follower died after %d of the stream's records, holding %d flows of %d: %+v", n, standby.Len(), primary.Len(), st)
	}
	for range 3000 { // the primary goes on meanwhile
		ch.step()
	}
	f2 := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f2)
	converge(t, p, primary, standby)
}

// TestTwoPublishersFenced: a second publisher of the same name takes the
// lease at a newer epoch; the first is fenced, its late records are
// refused, and the follower ends equal to the second's table.
func TestTwoPublishersFenced(t *testing.T) {
	b := startBroker(t)
	a, c, standby := realTable(t, 5000), realTable(t, 5000), realTable(t, 5000)
	cha, chc := newChurner(a, 1000, 7), newChurner(c, 1000, 8)
	pa := startPublisher(t, b.connect(t), a, pubConfig())
	f := startFollower(t, b.connect(t), standby, folConfig())
	cha.run(200 * time.Millisecond)
	pc := startPublisher(t, b.connect(t), c, pubConfig())
	if pc.Epoch() <= pa.Epoch() {
		t.Fatalf("second publisher's epoch %d, first's %d", pc.Epoch(), pa.Epoch())
	}
	// The stale primary goes on changing its table until it is fenced.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				cha.step()
			}
		}
	}()
	await(t, "the first publisher is fenced", pa.Fenced(), func() any { return pa.Stats() })
	close(stop)
	if !errors.Is(pa.Err(), ErrFenced) {
		t.Errorf("first publisher's error: %v, want ErrFenced", pa.Err())
	}
	chc.run(200 * time.Millisecond)
	converge(t, pc, c, standby)
	t.Logf("follower refused %d records of the fenced epoch", f.Stats().Fenced)
	// The stream too: the fenced publisher's late records did not
	// replace the new epoch's, so a follower that starts now from the
	// stream's last records ends equal as well.
	cold := realTable(t, 5000)
	fc := startFollower(t, b.connect(t), cold, folConfig())
	caughtUp(t, fc)
	converge(t, pc, c, cold)
}

// TestPromote: a follower promoted on a lapsed lease publishes at the next
// epoch, fast, and another follower follows it.
func TestPromote(t *testing.T) {
	b := startBroker(t)
	primary, standby, third := realTable(t, 5000), realTable(t, 5000), realTable(t, 5000)
	ch := newChurner(primary, 1000, 9)
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	f := startFollower(t, b.connect(t), standby, folConfig())
	ch.run(200 * time.Millisecond)
	converge(t, p, primary, standby)
	epoch := p.Epoch()
	p.Close() // the primary dies; its lease lapses
	await(t, "the lease lapses", f.Lapsed(), func() any { return f.Stats() })
	start := time.Now()
	np, err := f.Promote(ctxFor(t), PublisherConfig[Flow]{Interval: 20 * time.Millisecond})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	if np.Epoch() != epoch+1 {
		t.Errorf("promoted at epoch %d, want %d", np.Epoch(), epoch+1)
	}
	t.Logf("promotion took %v", took)
	f3 := startFollower(t, b.connect(t), third, folConfig())
	caughtUp(t, f3)
	converge(t, np, standby, third)
}

// TestPromoteAppliesTheLastFlush: a standby promoted at once after the
// primary's last flush was acknowledged (an operator's signal, before
// the lease lapses) first applies what the stream holds: the promoted
// table is the primary's as of that flush.
func TestPromoteAppliesTheLastFlush(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 10000), realTable(t, 10000)
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	f := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f)
	ch := newChurner(primary, 4000, 11)
	for i := range 3000 {
		ch.store(key(i), i%3 == 0)
	}
	if err := p.Flush(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Close() // the primary dies after its last flush
	np, err := f.Promote(ctxFor(t), PublisherConfig[Flow]{Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	t.Logf("promoted in %v, %d flows", time.Since(start), standby.Len())
	if err := equalTables(primary, standby, p.longestFlush()+time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

// TestCodecVersionMismatch: a follower whose codec has another version
// applies nothing and counts every record as invalid.
func TestCodecVersionMismatch(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 1000), realTable(t, 1000)
	for i := range 50 {
		primary.Insert(key(i), Flow{Port: uint16(i)})
	}
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	p.Flush(ctxFor(t))
	cfg := folConfig()
	cfg.Codec, _ = Binary[Flow](2)
	f := startFollower(t, b.connect(t), standby, cfg)
	caughtUp(t, f)
	if st := f.Stats(); st.Invalid != 50 || standby.Len() != 0 {
		t.Fatalf("stats %+v, %d flows: want 50 invalid records and nothing applied", st, standby.Len())
	}
	err := f.Apply(appendRecord(nil, Codec[Flow](pubConfig().Codec), &record[Flow]{op: opFlow, key: key(1)}), time.Now())
	if !errors.Is(err, ErrVersion) {
		t.Errorf("Apply: %v, want ErrVersion", err)
	}
}

// TestSlowFollowerAndDrops: a publisher whose queue is too small for the
// churn drops notes, counts them and resyncs, the data path never waits;
// a follower that starts late catches up on the stream's last records
// and ends equal.
func TestSlowFollowerAndDrops(t *testing.T) {
	b := startBroker(t)
	primary, standby := realTable(t, 20000), realTable(t, 20000)
	cfg := pubConfig()
	cfg.Queue = 64
	p := startPublisher(t, b.connect(t), primary, cfg)
	ch := newChurner(primary, 5000, 10)
	start := time.Now()
	for range 5000 {
		ch.step()
	}
	t.Logf("5000 changes in %v with a publisher attached", time.Since(start))
	ch.run(300 * time.Millisecond)
	f := startFollower(t, b.connect(t), standby, folConfig())
	caughtUp(t, f)
	converge(t, p, primary, standby)
	if st := p.Stats(); st.Dropped == 0 || st.Resyncs < 2 {
		t.Errorf("publisher stats %+v: want drops and resyncs", st)
	}
}

func TestNames(t *testing.T) {
	for _, n := range []string{"", "a.b", "a b", "x>", string(make([]byte, 65))} {
		if checkName(n) == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	if err := checkName("port-1_a"); err != nil {
		t.Error(err)
	}
	_ = fmt.Sprint()
}

// soakDuration is how long TestSoak runs: STRESS=long (as race_test's
// long runs), for STRESS_DURATION (10 minutes by default); otherwise it
// is skipped, so that make test stays short.
func soakDuration(t *testing.T) time.Duration {
	if os.Getenv("STRESS") != "long" {
		t.Skip("a soak: STRESS=long [STRESS_DURATION=10m] runs it")
	}
	if s := os.Getenv("STRESS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("STRESS_DURATION=%q: %v", s, err)
		}
		return d
	}
	return 10 * time.Minute
}

// TestSoak: TestEqualityUnderChurn's churn for as long as it is asked,
// with the follower restarted and the broker restarted in turn between
// rounds; at the end of every round the follower equals the primary.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	b := startBroker(t)
	primary, standby := realTable(t, 50000), realTable(t, 50000)
	ch := newChurner(primary, 20000, 12)
	p := startPublisher(t, b.connect(t), primary, pubConfig())
	f := startFollower(t, b.connect(t), standby, folConfig())
	round := 0
	for end := time.Now().Add(d); time.Now().Before(end); round++ {
		ch.run(2 * time.Second)
		switch round % 3 {
		case 1:
			f.Close()
			f = startFollower(t, b.connect(t), standby, folConfig())
		case 2:
			b.stop()
			ch.run(500 * time.Millisecond)
			b.start()
		}
		converge(t, p, primary, standby)
	}
	t.Logf("%d rounds; publisher %+v; follower %+v", round, p.Stats(), f.Stats())
}
