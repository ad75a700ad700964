package bench

import (
	"time"

	"github.com/flowcache/flowcache/flowcache"
)

// attachFeed attaches a change feed to t and drains it every period, as a
// publisher does, reading each changed flow's state; stop detaches it.
func attachFeed(t *flowcache.Table[State], period time.Duration) (stop func(), ok bool) {
	c, err := t.Changes(1 << 20)
	if err != nil {
		panic(err)
	}
	var states uint64
	read := func(ch flowcache.Change[State]) {
		if ch.Flow != nil {
			states += uint64(ch.Flow.State())
		}
	}
	c.Resync(read)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if c.Lost() {
					c.Resync(read)
				}
				c.Drain(read)
			}
		}
	}()
	return func() { close(done); <-finished; c.Close() }, true
}
