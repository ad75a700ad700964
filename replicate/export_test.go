package replicate

import (
	"context"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/nats-io/nats.go/jetstream"
)

// newCrashingFollower is NewFollower whose apply loop stops after n
// records, as if its process had died there: mid catch-up, for a test.
func newCrashingFollower[V any](ctx context.Context, js jetstream.JetStream, t *flowcache.Table[V], cfg FollowerConfig[V], n uint64) (*Follower[V], error) {
	f := newFollower(t, cfg)
	f.crashAfter = n
	return f.follow(ctx, js)
}

// stopped is closed when the follower's apply loop has returned.
func (f *Follower[V]) stopped() <-chan struct{} { return f.done }

// longestFlush is the longest a flush of p took from its first read of
// the table to its last acknowledgement: a record's idle time was read
// at most that long before the stream stored it, which bounds how much
// younger a follower's copy of a flow may look than the primary's.
func (p *Publisher[V]) longestFlush() time.Duration { return time.Duration(p.maxFlush.Load()) }
