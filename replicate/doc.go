// Package replicate lets flows outlive their host: snapshot and restore
// for a hitless restart on one host, and (in later files) a change stream
// on NATS JetStream for a standby that takes over.
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
//
// # Snapshots
//
// WriteSnapshot walks a table as Range does and streams every flow;
// RestoreSnapshot reads the whole snapshot, checks its CRC-32C and count,
// and only then restores every flow with flowcache's Table.Restore, one
// locked step per flow. A snapshot holds idle times, not clock readings,
// so a flow idle 50 s of 60 s expires 10 s after the restore, however
// long the restart took and whatever the new host's clock says.
package replicate
