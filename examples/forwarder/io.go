package main

import (
	"fmt"
	"net"
)

// receiver is one worker's share of the frames arriving on -in: a ring
// (ring.go) or a socket (afpacket.go) in the fanout group. The worker's
// batch step does not see which.
type receiver interface {
	// read returns up to a batch of frames, each in a buffer the
	// receiver owns until the next read (the worker rewrites the MACs in
	// place), and how many frames were too long to keep. With nothing
	// to read it waits a little (1 ms for a ring, 100 ms for a socket)
	// and returns none, so that the worker can look at its stop channel.
	read(frames [][]byte) (_ [][]byte, oversize int, err error)
	// drops is how many frames the kernel dropped because this
	// receiver's ring or buffer was full, since it was opened. Only the
	// monitor goroutine calls it.
	drops() uint64
	close()
}

// sender is one worker's way out on -out.
type sender interface {
	send(frame []byte) error
	close()
}

// openIO opens one worker's receiver on in, in the fanout group, and its
// sender on out, the way -io says.
func openIO(o options, in, out *net.Interface, fanout uint16) (receiver, sender, error) {
	bufSize := frameBufSize(in)
	switch o.io {
	case "ring":
		rx, err := openRingRx(in.Name, fanout, o.ring, bufSize, o.batch)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		tx, err := openRingTx(out.Name)
		if err != nil {
			rx.close()
			return nil, nil, fmt.Errorf("%s: %w", out.Name, err)
		}
		return rx, tx, nil
	case "syscall":
		rx, err := openSockRx(in.Index, fanout, o.rcvbuf, bufSize, o.batch)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		fd, err := openTx(out.Index)
		if err != nil {
			rx.close()
			return nil, nil, fmt.Errorf("%s: %w", out.Name, err)
		}
		return rx, sockTx{fd}, nil
	}
	return nil, nil, fmt.Errorf("-io must be ring or syscall, not %q", o.io)
}

// checkRing refuses -ring-* sizes that could not carry a frame of iface
// whole. (The library checks the rest: a block is a multiple of the page
// size and of the frame size, at least one block, a timeout of 1 ms or
// more.)
func checkRing(rc ringConfig, iface *net.Interface) error {
	// A V3 block starts with its header (48 bytes) and each frame with
	// its own (tpacket3_hdr and sockaddr_ll, aligned: under 128 bytes).
	if need := frameBufSize(iface) + 256; rc.blockSize < need {
		return fmt.Errorf("-ring-block-size %d: %s carries frames of up to %d bytes, want a block of at least %d",
			rc.blockSize, iface.Name, frameBufSize(iface)-1, need)
	}
	return nil
}
