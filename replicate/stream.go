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
//	        flows.n.f.<key>   a flow's records: opFlow, or opGone (a
//	                          tombstone, with a TTL); <key> is the first
//	                          key's record encoding in hex
//	        flows.n.sync      the last resync's marker: epoch and first
//	                          sequence of the resync
//	bucket  KV flowlease_n, key "primary": the publisher's lease, its
//	        epoch and holder; the bucket's TTL is the lease's
func streamName(name string) string  { return "FLOWS_" + name }
func flowSubject(name string) string { return "flows." + name + ".f." }
func syncSubject(name string) string { return "flows." + name + ".sync" }
func leaseBucket(name string) string { return "flowlease_" + name }

const leaseKey = "primary"

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

// ensureStream creates the stream and the lease bucket, or checks that
// they are there as this package makes them.
func ensureStream(ctx context.Context, js jetstream.JetStream, name string, leaseTTL time.Duration) (jetstream.KeyValue, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              streamName(name),
		Subjects:          []string{"flows." + name + ".>"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		AllowMsgTTL:       true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("replicate: stream %s: %w", streamName(name), err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  leaseBucket(name),
		TTL:     leaseTTL,
		Storage: jetstream.FileStorage,
		History: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("replicate: lease bucket %s: %w", leaseBucket(name), err)
	}
	return kv, nil
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
	e, err := kv.Get(ctx, leaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	return leaseEpoch(e.Value()), e.Revision(), nil
}

// takeLease takes the lease at an epoch above both the lease's and min:
// created if there is none, else swapped against the revision read, so
// of two takers one wins and the other tries again higher.
func takeLease(ctx context.Context, kv jetstream.KeyValue, min uint64, holder string) (epoch, rev uint64, err error) {
	for range 10 {
		cur, r, err := readLease(ctx, kv)
		if err != nil {
			return 0, 0, err
		}
		epoch = max(cur, min) + 1
		if r == 0 {
			rev, err = kv.Create(ctx, leaseKey, leaseValue(epoch, holder))
		} else {
			rev, err = kv.Update(ctx, leaseKey, leaseValue(epoch, holder), r)
		}
		if err == nil {
			return epoch, rev, nil
		}
		if !isWrongSequence(err) {
			return 0, 0, err
		}
	}
	return 0, 0, fmt.Errorf("replicate: lease: too many concurrent takers")
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
