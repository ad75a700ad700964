package replicate

import "time"

// Stats counts what a Publisher or a Follower did; metrics/replication
// exports it. Counters only grow.
type Stats struct {
	Role  string // "publisher" or "follower"
	Name  string
	Epoch uint64 // the publisher's epoch; the newest a follower has seen

	// Publisher.
	Published uint64 // records sent (flows, tombstones, resync markers)
	Coalesced uint64 // changes folded into a later one of the same flow before a flush
	Filtered  uint64 // flows the Filter kept off the stream
	Dropped   uint64 // changes lost to a full queue, and publishes that failed: each schedules a resync
	Resyncs   uint64 // times every flow was sent again
	WireBytes uint64 // bytes sent: subjects and records
	Flushes   uint64 // flushes done, each with its acknowledgements in (or given up on)

	// Follower.
	Applied  uint64        // records applied
	Stale    uint64        // duplicates and records older than what the follower holds, ignored
	Fenced   uint64        // records of an epoch older than the newest seen, refused
	Invalid  uint64        // records that did not decode or that the table refused
	Removed  uint64        // flows removed by tombstones and resync markers
	Flows    int           // flows the follower holds
	LagP50   time.Duration // from the stream's timestamp to applied, over the last 4096 records
	LagP99   time.Duration
	CaughtUp bool
}
