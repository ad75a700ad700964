package replicate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"

	"github.com/flowcache/flowcache/flowcache"
)

// snapshotVersion is the snapshot container's format; each record inside
// carries its own (recordVersion).
const snapshotVersion = 1

// snapshotMagic opens every snapshot.
var snapshotMagic = [6]byte{'F', 'C', 'S', 'N', 'A', 'P'}

// A snapshot, as WriteSnapshot writes it:
//
//	header   magic "FCSNAP" │ version (2 bytes, big-endian) │ written at (8 bytes, ms since the Unix epoch)
//	records  { uvarint n > 0 │ n bytes: one record (record.go) } …
//	end      uvarint 0 │ count (8 bytes) │ CRC-32C of every byte before it (4 bytes)
//
// Each record holds its flow's idle time at the moment it was read, not
// its last-seen time, so the snapshot does not depend on the two hosts'
// clocks agreeing: a restore makes the flow's last-seen time its own now
// minus that idle time.

// maxRecord bounds one record, so a corrupt length cannot make a reader
// allocate without bound.
const maxRecord = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SnapshotInfo is what a snapshot holds, from its header and trailer.
type SnapshotInfo struct {
	Flows   int       // flows written or restored
	Bytes   int64     // the snapshot's size
	Written time.Time // when the writer started, by its clock
}

// WriteSnapshot writes every flow of t to w: its keys, value (through c),
// class, state word, counters and idle time at now. It walks t as Range
// does, without stopping writers: a flow present for the whole walk is
// written exactly once; one that comes or goes meanwhile may or may not
// be. For a restart, stop the traffic first. It returns what it wrote and
// the first error of w.
func WriteSnapshot[V any](w io.Writer, t *flowcache.Table[V], c Codec[V], now time.Time) (SnapshotInfo, error) {
	cw := &countWriter{w: w, crc: crc32.New(castagnoli)}
	bw := bufio.NewWriterSize(cw, 256<<10)
	info := SnapshotInfo{Written: now}
	hdr := make([]byte, 0, 16)
	hdr = append(hdr, snapshotMagic[:]...)
	hdr = binary.BigEndian.AppendUint16(hdr, snapshotVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(now.UnixMilli()))
	bw.Write(hdr)
	var r record[V]
	var buf []byte
	for e := range t.All() {
		r.fromEntry(e, now)
		buf = appendRecord(buf[:0], c, &r)
		var lb [binary.MaxVarintLen64]byte
		bw.Write(lb[:binary.PutUvarint(lb[:], uint64(len(buf)))])
		bw.Write(buf)
		info.Flows++
		if cw.err != nil {
			return info, cw.err
		}
	}
	end := binary.AppendUvarint(nil, 0)
	end = binary.BigEndian.AppendUint64(end, uint64(info.Flows))
	bw.Write(end)
	if err := bw.Flush(); err != nil {
		return info, err
	}
	// The checksum covers everything written so far; it goes out last.
	sum := binary.BigEndian.AppendUint32(nil, cw.crc.Sum32())
	if _, err := w.Write(sum); err != nil {
		return info, err
	}
	info.Bytes = cw.n + 4
	return info, nil
}

type countWriter struct {
	w   io.Writer
	crc hash.Hash32
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.crc.Write(p[:n])
	c.n += int64(n)
	c.err = err
	return n, err
}

// RestoreSnapshot reads a snapshot that WriteSnapshot wrote and restores
// its flows into t with Table.Restore, each with its idle time counted
// back from now, its class, state word and counters, so that a flow that
// was idle 50 s of its 60 s expires 10 s after now.
//
// It is all or nothing. It reads and checks the whole snapshot first: a
// truncated one is ErrTruncated, a corrupt one (a bad checksum, count or
// record) ErrCorrupt, an unknown format or value version a *VersionError
// (ErrVersion), a value that c cannot decode ErrValue; then t is not
// touched. If t refuses a flow (ErrFull, a class it does not have), the
// flows this call added are removed again (their OnRemove runs, cause
// Removed) and the error is returned; a flow that was in t already is
// updated in place by Restore and stays updated.
func RestoreSnapshot[V any](r io.Reader, t *flowcache.Table[V], c Codec[V], now time.Time) (SnapshotInfo, error) {
	recs, info, err := readSnapshot(r, c)
	if err != nil {
		return info, err
	}
	added := make([]flowcache.FlowKey, 0, len(recs))
	for i := range recs {
		_, fresh, err := t.Restore(recs[i].row(now))
		if err != nil {
			for _, k := range added {
				t.Remove(k)
			}
			return info, fmt.Errorf("replicate: restore flow %d of %d (%v): %w", i+1, len(recs), recs[i].key, err)
		}
		if fresh {
			added = append(added, recs[i].key)
		}
	}
	return info, nil
}

// readSnapshot reads and checks a whole snapshot.
func readSnapshot[V any](r io.Reader, c Codec[V]) ([]record[V], SnapshotInfo, error) {
	var info SnapshotInfo
	raw := bufio.NewReaderSize(r, 256<<10)
	br := &sumReader{r: raw, crc: crc32.New(castagnoli)}
	var hdr [16]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, info, truncated(err, "header")
	}
	if [6]byte(hdr[:6]) != snapshotMagic {
		return nil, info, fmt.Errorf("%w: not a flowcache snapshot", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(hdr[6:]); v != snapshotVersion {
		return nil, info, &VersionError{What: "snapshot", Got: int(v), Want: snapshotVersion}
	}
	info.Written = time.UnixMilli(int64(binary.BigEndian.Uint64(hdr[8:])))
	info.Bytes = int64(len(hdr))
	var recs []record[V]
	var buf []byte
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, info, truncated(err, "record length")
		}
		info.Bytes += int64(uvarintLen(n))
		if n == 0 {
			break
		}
		if n > maxRecord {
			return nil, info, fmt.Errorf("%w: record %d is %d bytes long", ErrCorrupt, len(recs)+1, n)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, info, truncated(err, "record")
		}
		info.Bytes += int64(n)
		recs = append(recs, record[V]{})
		if err := decodeRecord(buf, c, &recs[len(recs)-1]); err != nil {
			return nil, info, fmt.Errorf("snapshot record %d: %w", len(recs), err)
		}
		if recs[len(recs)-1].op != opFlow {
			return nil, info, fmt.Errorf("%w: snapshot record %d is not a flow", ErrCorrupt, len(recs))
		}
	}
	var count [8]byte
	if _, err := io.ReadFull(br, count[:]); err != nil {
		return nil, info, truncated(err, "count")
	}
	if got := binary.BigEndian.Uint64(count[:]); got != uint64(len(recs)) {
		return nil, info, fmt.Errorf("%w: snapshot says %d flows, holds %d", ErrCorrupt, got, len(recs))
	}
	// The checksum covers every byte before it, so it is read past the
	// summing reader.
	var sum [4]byte
	if _, err := io.ReadFull(raw, sum[:]); err != nil {
		return nil, info, truncated(err, "checksum")
	}
	if got, want := binary.BigEndian.Uint32(sum[:]), br.crc.Sum32(); got != want {
		return nil, info, fmt.Errorf("%w: checksum %08x, computed %08x", ErrCorrupt, got, want)
	}
	if _, err := raw.ReadByte(); err != io.EOF {
		return nil, info, fmt.Errorf("%w: bytes after the checksum", ErrCorrupt)
	}
	info.Bytes += 8 + 4
	info.Flows = len(recs)
	return recs, info, nil
}

// sumReader checksums exactly the bytes read through it.
type sumReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	one [1]byte
}

func (s *sumReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.crc.Write(p[:n])
	return n, err
}

func (s *sumReader) ReadByte() (byte, error) {
	b, err := s.r.ReadByte()
	if err == nil {
		s.one[0] = b
		s.crc.Write(s.one[:])
	}
	return b, err
}

func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// truncated turns an early end into ErrTruncated; other read errors pass.
func truncated(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: snapshot ends in its %s", ErrTruncated, what)
	}
	return fmt.Errorf("replicate: reading snapshot %s: %w", what, err)
}
