// Package replicate lets flows outlive their host: snapshot and restore
// for a hitless restart on one host, and a change stream on NATS
// JetStream for a standby that takes over. Package flowcache knows
// nothing of it: the table offers Restore (one locked step that stores a
// flow with its age, class, state and counters) and Changes (a change
// feed); only programs that import replicate link NATS
// (TestNoNATSInFlowcache).
//
// # Records
//
// Snapshots and the stream carry one record format (record.go): the
// flow's keys (a pair's two), class, state word, packet, byte and hit
// counters, idle time and value, the value put on the wire by a Codec.
// Every record carries the record format's version and the codec's; a
// reader refuses any version it does not know with a *VersionError, and a
// value its codec cannot decode with ErrValue, before it applies
// anything of that flow. Decoding never panics (FuzzDecodeRecord).
// Records hold idle times, not clock readings: a reader counts them back
// from its own now (a snapshot) or from the stream's store time (the
// stream), so a flow idle 50 s of 60 s expires 10 s later on the new host.
//
// # Snapshots
//
// WriteSnapshot walks a table as Range does and streams every flow;
// RestoreSnapshot reads the whole snapshot, checks its CRC-32C and count,
// and only then restores every flow with Table.Restore; a table that
// refuses one gets the flows of this call removed again.
//
// # The stream
//
// A Publisher attaches a change feed to the table and, every Interval
// (100 ms), drains it: each flow noted since the last flush is sent once,
// as the table holds it then (coalesced), to its own subject of a stream
// that keeps one message per subject, so the stream is the table's last
// state; a flow that left is a tombstone with a TTL. The Filter decides at
// the flush whether a flow starts replicating. Every record carries the
// publisher's epoch and a sequence that grows with every record, and its
// message ID is the two, so a client retry is stored once. The table's
// data path never waits: notes wait in the feed's bounded queue. A flush
// waits for the stream's acknowledgements while they keep coming (at
// most 1024 outstanding; given up after 2 s without one); a full queue,
// a failed publish or an acknowledgement given up on costs a resync
// (every flow sent again, then a marker with the resync's first
// sequence: a follower drops the flows of that epoch or older the resync
// did not send), at least ten intervals after the last one ended, so
// that an overload does not feed itself. Flows seen since they were last
// sent are sent again every Refresh (a third of the shortest timeout),
// so a follower's copy of an active flow does not expire.
//
// A Follower catches up from the stream's last record of every flow (an
// ordered consumer delivering the last per subject), says so (CaughtUp:
// it has applied the stream's last record as of its start, or a later
// one, so a publisher that never pauses cannot postpone it), and
// follows. It applies a record only if its (epoch, sequence) is newer
// than what it holds for the flow (tombstones included, for two
// horizons), and newer than every flow it would displace (another flow
// holding one of its keys): duplicates, reordered and stale records
// change nothing. A record of an epoch older than the newest seen, in a
// record or in the lease, is refused and counted (fencing).
//
// # Epochs, the lease and promotion
//
// A publisher takes a new epoch, one above the highest ever taken (a
// counter in a KV bucket without TTL, so epochs only grow even after the
// lease lapsed and vanished), then the lease (a key in a KV bucket whose
// TTL is the lease's) at that epoch, each with compare-and-set, and
// renews the lease every third of its TTL from a goroutine of its own. A
// renewal that finds a newer epoch fences it: it stops and Fenced is
// closed. Each epoch writes its own subjects, so that a fenced publisher
// that does not know it yet cannot replace a newer epoch's record of a
// flow in the stream (which keeps one record per subject); once a new
// epoch's first resync is acknowledged, the stream holds every flow
// under its subjects, and older epochs' subjects are purged. A follower
// reads the lease every quarter TTL; when it has not changed for a TTL,
// Lapsed is closed. Promote applies what the stream holds (the old
// primary's last flush may be stored and not applied yet; at most a
// lease TTL), stops following and starts a publisher on the standby's
// table at the next epoch.
//
// # Concurrency
//
// A Publisher's flusher is one goroutine, its lease keeper another; the
// table's workers only note changes. A Follower applies records on one
// goroutine, the only writer of its table beside the table's own passes.
// Stats may be called from any goroutine. Neither keeps an *Entry past
// the call that read it.
package replicate
