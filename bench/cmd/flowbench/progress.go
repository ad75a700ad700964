package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/term"
)

// progressEvery is the period of the plain progress lines written where
// the output is not a terminal.
const progressEvery = 5 * time.Second

// progress draws a run's progress in the form that fits where it is
// written. On a terminal, one line redrawn in place (a carriage return,
// no newline) on every report tick, ten times a second. Anywhere else —
// a log file, a pipe, CI — a carriage return does not go back, so each
// redraw would be a line of its own, about 300 for a 30 s run: there it
// writes one plain line every progressEvery of the run, and the last
// state once at the end.
type progress struct {
	w      io.Writer
	redraw bool          // w is a terminal
	every  time.Duration // without redraw: the period of the lines
	next   time.Duration // without redraw: the run time of the next line
	last   string        // without redraw: the latest state, unless written
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, redraw: isTerminal(w), every: progressEvery, next: progressEvery}
}

// isTerminal reports whether w writes to a terminal. Only a file (an
// *os.File, or anything else with its file descriptor) can be one.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// update shows the run's state at el: bar is the progress bar, drawn
// only on a terminal, and state the rest of the line.
func (p *progress) update(el time.Duration, impl, bar, state string) {
	if p.redraw {
		fmt.Fprintf(p.w, "\r%-17s %s%s ", impl, bar, state)
		return
	}
	p.last = fmt.Sprintf("%-17s %s\n", impl, state)
	if el >= p.next {
		io.WriteString(p.w, p.last)
		p.last = ""
		// The next line is at the next multiple of every, even after a
		// tick that came late.
		p.next = el.Truncate(p.every) + p.every
	}
}

// done ends the progress: the redrawn line gets its newline, and the
// plain lines get the final state if the last line did not already say
// it.
func (p *progress) done() {
	if p.redraw {
		fmt.Fprintln(p.w)
		return
	}
	if p.last != "" {
		io.WriteString(p.w, p.last)
		p.last = ""
	}
}

// progress shows the state of the run in progress (see type progress).
func (s *sim) progress(el time.Duration, sim int64, live int, mpps float64, m *model) {
	if s.prog == nil {
		s.prog = newProgress(s.cfg.Progress)
	}
	const width = 30
	frac, phase := 0.0, "replay"
	if m != nil {
		frac = min(el.Seconds()/s.cfg.Duration.Seconds(), 1)
		switch {
		case sim < m.spikeFrom:
			phase = "base load"
		case sim < m.spikeTo:
			phase = "SYN spike"
		default:
			phase = "drain"
		}
	}
	n := int(frac * width)
	bar := "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "] "
	s.prog.update(el, s.cfg.Impl, bar, fmt.Sprintf("%5.1fs  sim %4ds  %-9s live %9d  %6.2f Mpps", el.Seconds(), sim/1000, phase, live, mpps))
}

// progressDone ends the progress after the run's last update.
func (s *sim) progressDone() {
	if s.prog != nil {
		s.prog.done()
	}
}
