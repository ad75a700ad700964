package replicate

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/nats-io/nats.go/jetstream"
)

// Where a table's replication lives in JetStream, for a Name n:
//
//	stream  FLOWS_n, subjects flows.n.>, file storage, one message per
//	        subject (the stream keeps each flow's last record), message
//	        TTLs allowed (tombstones expire), publish dedup by message ID
//	        flows.n.<e>.f.<key>  a flow's records from the publisher of
//	                             epoch e: opFlow, or opGone (a tombstone,
//	                             with a TTL); <key> is the first key's
//	                             record encoding in hex
//	        flows.n.<e>.sync     epoch e's last resync marker: its first
//	                             sequence
//	bucket  KV flowlease_n, key "primary": the publisher's lease, its
//	        epoch and holder; the bucket's TTL is the lease's
//	bucket  KV flowepoch_n, no TTL: key "epoch", the highest epoch ever
//	        taken, so that epochs only grow even when the lease lapsed
//	        and is gone; key "purged", the highest epoch whose subjects
//	        were purged
//
// Each epoch writes its own subjects, so that a publisher that does not
// know yet it was fenced cannot overwrite, in the stream's one message
// per subject, a newer epoch's record of the same flow: a follower
// catching up later would never see the newer one. A new epoch's first
// complete resync has sent every flow again under its own subjects;
// then the subjects of every older epoch are purged.
func streamName(name string) string { return "FLOWS_" + name }
func epochSubjects(name string, epoch uint64) string {
	return "flows." + name + "." + strconv.FormatUint(epoch, 10) + ".>"
}
func flowSubject(name string, epoch uint64) string {
	return "flows." + name + "." + strconv.FormatUint(epoch, 10) + ".f."
}
func syncSubject(name string, epoch uint64) string {
	return "flows." + name + "." + strconv.FormatUint(epoch, 10) + ".sync"
}
func leaseBucket(name string) string { return "flowlease_" + name }
func epochBucket(name string) string { return "flowepoch_" + name }

const (
	leaseKey  = "primary"
	epochKey  = "epoch"
	purgedKey = "purged"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("replicate: name %q: want 1 to 64 letters, digits, '-' or '_'", name)
	}
	return nil
}

// subjectFor is a flow's subject: its first key, encoded as in a record,
// in hex (a subject token may not hold '.', '*', '>' or spaces).
func subjectFor(prefix string, k *flowcache.FlowKey) string {
	var kb [40]byte
	b := appendKey(kb[:0], k)
	out := make([]byte, len(prefix)+2*len(b))
	copy(out, prefix)
	hex.Encode(out[len(prefix):], b)
	return string(out)
}

// replication is what ensureStream finds or makes.
type replication struct {
	stream jetstream.Stream
	lease  jetstream.KeyValue // the lease, with the lease's TTL
	epochs jetstream.KeyValue // the epoch counter and the purge floor, no TTL
}

// ensureStream creates the stream and the buckets, or checks that they
// are there as this package makes them.
func ensureStream(ctx context.Context, js jetstream.JetStream, name string, leaseTTL time.Duration) (replication, error) {
	var r replication
	if err := checkName(name); err != nil {
		return r, err
	}
	var err error
	r.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              streamName(name),
		Subjects:          []string{"flows." + name + ".>"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		AllowMsgTTL:       true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return r, fmt.Errorf("replicate: stream %s: %w", streamName(name), err)
	}
	r.lease, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  leaseBucket(name),
		TTL:     leaseTTL,
		Storage: jetstream.FileStorage,
		History: 1,
	})
	if err != nil {
		return r, fmt.Errorf("replicate: lease bucket %s: %w", leaseBucket(name), err)
	}
	r.epochs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  epochBucket(name),
		Storage: jetstream.FileStorage,
		History: 1,
	})
	if err != nil {
		return r, fmt.Errorf("replicate: epoch bucket %s: %w", epochBucket(name), err)
	}
	return r, nil
}

// A lease value: the epoch in decimal, a space, the holder's name.
func leaseValue(epoch uint64, holder string) []byte {
	return []byte(strconv.FormatUint(epoch, 10) + " " + holder)
}

func leaseEpoch(v []byte) uint64 {
	end := 0
	for end < len(v) && v[end] != ' ' {
		end++
	}
	e, _ := strconv.ParseUint(string(v[:end]), 10, 64)
	return e
}

// readLease is the lease's epoch and revision; 0, 0 when there is none.
func readLease(ctx context.Context, kv jetstream.KeyValue) (epoch, rev uint64, err error) {
	return readNumber(ctx, kv, leaseKey)
}

// readNumber is the number that opens key's value, and its revision; 0,
// 0 when there is none.
func readNumber(ctx context.Context, kv jetstream.KeyValue, key string) (n, rev uint64, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	return leaseEpoch(e.Value()), e.Revision(), nil
}

// swap sets key to v if its revision is still rev (0: if it has none).
func swap(ctx context.Context, kv jetstream.KeyValue, key string, v []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return kv.Create(ctx, key, v)
	}
	return kv.Update(ctx, key, v, rev)
}

// takeLease takes the lease at a new epoch: above the highest epoch ever
// taken (the counter, which outlives a lapsed lease), the lease's and
// min. The counter is raised first and the lease then swapped, each
// with compare-and-set against what was read, so that of two takers
// each gets an epoch of its own and the lease ends with the later one;
// the other is fenced at its next renewal.
func takeLease(ctx context.Context, r replication, min uint64, holder string) (epoch, rev uint64, err error) {
	for range 20 {
		top, crev, err := readNumber(ctx, r.epochs, epochKey)
		if err != nil {
			return 0, 0, err
		}
		cur, lrev, err := readLease(ctx, r.lease)
		if err != nil {
			return 0, 0, err
		}
		epoch = max(top, cur, min) + 1
		if _, err := swap(ctx, r.epochs, epochKey, []byte(strconv.FormatUint(epoch, 10)), crev); err != nil {
			if isWrongSequence(err) {
				continue
			}
			return 0, 0, err
		}
		rev, err = swap(ctx, r.lease, leaseKey, leaseValue(epoch, holder), lrev)
		if err == nil {
			return epoch, rev, nil
		}
		if !isWrongSequence(err) {
			return 0, 0, err
		}
	}
	return 0, 0, fmt.Errorf("replicate: lease: too many concurrent takers")
}

// purgeOlder removes every older epoch's records from the stream, once
// epoch's first resync is complete (its records and marker acknowledged:
// the stream holds every flow under epoch's subjects). The purge floor
// says where the last one stopped, so each epoch is purged once, even
// one whose publisher died before its first marker.
func purgeOlder(ctx context.Context, r replication, name string, epoch uint64) error {
	floor, rev, err := readNumber(ctx, r.epochs, purgedKey)
	if err != nil {
		return err
	}
	for e := floor + 1; e < epoch; e++ {
		if err := r.stream.Purge(ctx, jetstream.WithPurgeSubject(epochSubjects(name, e))); err != nil {
			return fmt.Errorf("replicate: purging epoch %d: %w", e, err)
		}
	}
	if floor+1 < epoch {
		// A lost swap: another publisher moved the floor meanwhile.
		swap(ctx, r.epochs, purgedKey, []byte(strconv.FormatUint(epoch-1, 10)), rev)
	}
	return nil
}

// isWrongSequence: a compare-and-set on the lease lost to another writer.
func isWrongSequence(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// The sync marker: after a resync, the records of its epoch below seq
// that the resync did not send again are of flows that left unseen.
//
//	byte 0 recordVersion, byte 1 0, byte 2 opSync << 4, byte 3 0, uvarint epoch, uvarint seq
func appendSync(b []byte, epoch, seq uint64) []byte {
	b = append(b, recordVersion, 0, byte(opSync)<<4, 0)
	b = binary.AppendUvarint(b, epoch)
	return binary.AppendUvarint(b, seq)
}
