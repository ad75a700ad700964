package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/replicate"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The forwarder's flows outlive it in two ways (package replicate):
//
//   - -snapshot FILE: the table is written to FILE when the forwarder
//     stops (SIGTERM or SIGINT, after the workers have stopped, so the
//     snapshot is the table's last state), and restored from it when it
//     starts, each flow with its idle time, state and counters: a
//     restart within the flows' timeouts keeps every connection. FILE is
//     removed once restored, so that a forwarder that later dies without
//     writing a new one does not bring back flows that are long gone.
//   - -replicate URL: the table's changes go to a JetStream stream (the
//     NATS server at URL), coalesced and flushed every 100 ms; -standby
//     URL: a standby forwarder follows that stream into its own table,
//     forwarding nothing, until it is promoted (SIGUSR1, or the primary's
//     lease lapses: no renewal for -lease-ttl); it then publishes at the
//     next epoch, which fences the old primary, and starts forwarding
//     with the flows it holds.

// flowCodec puts a Flow on the wire: one byte, its Action.
var flowCodec = mustBinary[Flow](1)

func mustBinary[V any](version uint8) replicate.Codec[V] {
	c, err := replicate.Binary[V](version)
	if err != nil {
		panic(err)
	}
	return c
}

// replicateAssured is -replicate-filter=assured: a flow is replicated
// once it is assured (a reply seen, or more than 3 packets), so a SYN
// flood's one-packet flows never reach the standby.
func replicateAssured(e *flowcache.Entry[Flow]) bool { return e.State()&assured != 0 }

// replication is the forwarder's side of a replication: the connection,
// and the publisher (a primary) or the follower (a standby, until it is
// promoted).
type replication struct {
	o     options
	table *flowcache.Table[Flow]
	nc    *nats.Conn
	js    jetstream.JetStream

	mu         sync.Mutex // guards the fields below against Stats
	pub        *replicate.Publisher[Flow]
	fol        *replicate.Follower[Flow]
	promotedBy string        // "signal" or "lease", once promoted
	promoteIn  time.Duration // how long Promote took
}

// connectTimeout bounds each step of starting a replication (the
// connection, the stream, the lease): a primary that cannot reach its
// server at start refuses to start rather than forward unreplicated.
const connectTimeout = 10 * time.Second

func dial(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("flowcache forwarder"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.Timeout(connectTimeout))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (r *replication) publisherConfig() replicate.PublisherConfig[Flow] {
	cfg := replicate.PublisherConfig[Flow]{Name: r.o.replName, Codec: flowCodec, LeaseTTL: r.o.leaseTTL}
	if r.o.replFilter == "assured" {
		cfg.Filter = replicateAssured
	}
	return cfg
}

// startPrimary publishes table's changes to the server at o.replicate.
func startPrimary(o options, table *flowcache.Table[Flow]) (*replication, error) {
	nc, js, err := dial(o.replicate)
	if err != nil {
		return nil, fmt.Errorf("-replicate %s: %w", o.replicate, err)
	}
	r := &replication{o: o, table: table, nc: nc, js: js}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if r.pub, err = replicate.NewPublisher(ctx, js, table, r.publisherConfig()); err != nil {
		nc.Close()
		return nil, fmt.Errorf("-replicate %s: %w", o.replicate, err)
	}
	return r, nil
}

// startStandby follows the stream at o.standby into table.
func startStandby(o options, table *flowcache.Table[Flow]) (*replication, error) {
	nc, js, err := dial(o.standby)
	if err != nil {
		return nil, fmt.Errorf("-standby %s: %w", o.standby, err)
	}
	r := &replication{o: o, table: table, nc: nc, js: js}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	cfg := replicate.FollowerConfig[Flow]{Name: o.replName, Codec: flowCodec, LeaseTTL: o.leaseTTL}
	if r.fol, err = replicate.NewFollower(ctx, js, table, cfg); err != nil {
		nc.Close()
		return nil, fmt.Errorf("-standby %s: %w", o.standby, err)
	}
	return r, nil
}

// standingBy reports whether r follows and has not been promoted.
func (r *replication) standingBy() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pub == nil
}

// lapsed is closed when the primary's lease lapses; nil when r is not a
// standby.
func (r *replication) lapsed() <-chan struct{} {
	if !r.standingBy() {
		return nil
	}
	return r.fol.Lapsed()
}

// promote makes a standby the primary: Promote applies what the stream
// holds, takes the lease at the next epoch and publishes the table.
func (r *replication) promote(why string) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	pub, err := r.fol.Promote(ctx, r.publisherConfig())
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.pub, r.promotedBy, r.promoteIn = pub, why, time.Since(start)
	r.mu.Unlock()
	return nil
}

// Stats is the replication's current side: the follower's until it is
// promoted, the publisher's after. It is metrics/replication's source.
func (r *replication) Stats() replicate.Stats {
	r.mu.Lock()
	pub, fol := r.pub, r.fol
	r.mu.Unlock()
	if pub != nil {
		return pub.Stats()
	}
	return fol.Stats()
}

// fenced is closed when a newer primary took the lease from this one.
func (r *replication) fenced() <-chan struct{} {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pub == nil {
		return nil
	}
	return r.pub.Fenced()
}

// close flushes what changed last (a primary's workers have stopped),
// stops following or publishing, and closes the connection.
func (r *replication) close() error {
	if r == nil {
		return nil
	}
	var err error
	if r.fol != nil {
		r.fol.Close()
	}
	if r.pub != nil {
		err = r.pub.Close()
	}
	r.nc.Close()
	return err
}

// replStatus is the replication's part of the -status file and the
// summary.
type replStatus struct {
	Role       string  `json:"role"` // primary, standby
	Name       string  `json:"name"`
	Epoch      uint64  `json:"epoch"`
	Published  uint64  `json:"published"`
	Coalesced  uint64  `json:"coalesced"`
	Filtered   uint64  `json:"filtered"`
	Dropped    uint64  `json:"dropped"`
	Resyncs    uint64  `json:"resyncs"`
	Flushes    uint64  `json:"flushes"`
	WireBytes  uint64  `json:"wire_bytes"`
	Applied    uint64  `json:"applied"`
	Stale      uint64  `json:"stale"`
	Fenced     uint64  `json:"fenced"`
	Invalid    uint64  `json:"invalid"`
	CaughtUp   bool    `json:"caught_up"`
	LagP50MS   float64 `json:"lag_p50_ms"`
	LagP99MS   float64 `json:"lag_p99_ms"`
	PromotedBy string  `json:"promoted_by,omitempty"` // signal, lease
	PromoteMS  float64 `json:"promote_ms,omitempty"`  // Promote: the stream applied, the lease taken
	// From the decision to promote to the workers reading frames.
	ForwardingMS float64 `json:"forwarding_ms,omitempty"`
	Err          string  `json:"error,omitempty"` // why a primary stopped publishing (fenced)
}

func (r *replication) status(forwarding time.Duration) *replStatus {
	if r == nil {
		return nil
	}
	st := r.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &replStatus{
		Role: "primary", Name: st.Name, Epoch: st.Epoch,
		Published: st.Published, Coalesced: st.Coalesced, Filtered: st.Filtered, Dropped: st.Dropped,
		Resyncs: st.Resyncs, Flushes: st.Flushes, WireBytes: st.WireBytes,
		PromotedBy: r.promotedBy, PromoteMS: ms(r.promoteIn), ForwardingMS: ms(forwarding),
	}
	if r.fol != nil {
		fs := r.fol.Stats()
		s.Applied, s.Stale, s.Fenced, s.Invalid = fs.Applied, fs.Stale, fs.Fenced, fs.Invalid
		s.CaughtUp, s.LagP50MS, s.LagP99MS = fs.CaughtUp, ms(fs.LagP50), ms(fs.LagP99)
	}
	if r.pub == nil {
		s.Role = "standby"
	} else if err := r.pub.Err(); err != nil {
		s.Err = err.Error()
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// snapStatus is what -snapshot did: the summary's "snapshot".
type snapStatus struct {
	File         string  `json:"file"`
	Restored     int     `json:"restored"` // flows restored at start
	RestoreMS    float64 `json:"restore_ms,omitempty"`
	RestoreError string  `json:"restore_error,omitempty"`
	Written      int     `json:"written"` // flows written at exit
	WriteMS      float64 `json:"write_ms,omitempty"`
	Bytes        int64   `json:"bytes,omitempty"`
}

// restoreSnapshot restores path into table, if it exists, and removes
// it. A snapshot that does not restore (damaged, another version, more
// flows than -limit) restores nothing: the forwarder starts empty, says
// why, and keeps the file as path.bad for a look.
func restoreSnapshot(path string, table *flowcache.Table[Flow]) *snapStatus {
	s := &snapStatus{File: path}
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s
	}
	if err != nil {
		s.RestoreError = err.Error()
		return s
	}
	defer file.Close()
	start := time.Now()
	info, err := replicate.RestoreSnapshot(file, table, flowCodec, time.Now())
	s.RestoreMS = ms(time.Since(start))
	if err != nil {
		s.RestoreError = err.Error()
		os.Rename(path, path+".bad")
		return s
	}
	s.Restored = info.Flows
	os.Remove(path)
	return s
}

// writeSnapshot writes table to s.File, through a file beside it that is
// synced and renamed over it, so that a crash leaves the old snapshot or
// the new one, never half of one.
func writeSnapshot(s *snapStatus, table *flowcache.Table[Flow]) error {
	start := time.Now()
	tmp, err := os.CreateTemp(filepath.Dir(s.File), filepath.Base(s.File)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	info, err := replicate.WriteSnapshot(tmp, table, flowCodec, time.Now())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.File)
	}
	if err != nil {
		return err
	}
	s.Written, s.Bytes, s.WriteMS = info.Flows, info.Bytes, ms(time.Since(start))
	return nil
}
