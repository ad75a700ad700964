package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	blue   = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	red    = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	orange = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	green  = color.RGBA{R: 44, G: 160, B: 44, A: 255}
)

// writePlot draws live flows (top) and heap (bottom) over the run's
// simulated time into a PNG at path.
func writePlot(path string, r *Report) error {
	if len(r.Samples) < 2 {
		return fmt.Errorf("plot: %d samples, need two", len(r.Samples))
	}
	top, err := liveFlowsPanel(r)
	if err != nil {
		return err
	}
	bot, err := heapPanel(r)
	if err != nil {
		return err
	}
	// One time axis for both panels, to the end of the run.
	end := max(r.Samples[len(r.Samples)-1].SimT, r.SimElapsed.Seconds())
	top.X.Min, top.X.Max = 0, end
	bot.X.Min, bot.X.Max = 0, end
	return savePanels(path, top, bot)
}

// series is one value of every sample against simulated time.
func series(r *Report, y func(Sample) float64) plotter.XYs {
	xys := make(plotter.XYs, len(r.Samples))
	for i, s := range r.Samples {
		xys[i] = plotter.XY{X: s.SimT, Y: y(s)}
	}
	return xys
}

// addLine adds a line to p, solid unless dashes are given, with its
// legend entry.
func addLine(p *plot.Plot, xys plotter.XYs, c color.Color, legend string, dashes ...vg.Length) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color, l.Width, l.Dashes = c, vg.Points(1.5), dashes
	p.Add(l)
	p.Legend.Add(legend, l)
	return nil
}

// legendRoom raises p's Y axis above the highest value its curves reach,
// top, so that the legend, top left, sits above the curves instead of on
// them: the legend's rows take about frac of the panel's height.
func legendRoom(p *plot.Plot, top float64, rows int) {
	frac := 0.09*float64(rows) + 0.04
	p.Y.Max = roundUp(top / (1 - frac))
	p.Y.Tick.Marker = evenTicks{}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Points(6)
}

// evenTicks labels an axis from 0 every 1, 2 or 5 × 10^k, about five
// labels in all.
type evenTicks struct{}

func (evenTicks) Ticks(lo, hi float64) []plot.Tick {
	raw := (hi - lo) / 5
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw {
			step *= m
			break
		}
	}
	var ts []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step/1e6; v += step {
		ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	return ts
}

// roundUp rounds x up to two significant digits, so the axis ends on a
// tick.
func roundUp(x float64) float64 {
	if x <= 0 {
		return 1
	}
	unit := math.Pow(10, math.Floor(math.Log10(x))-1)
	return math.Ceil(x/unit) * unit
}

// highest is the largest Y of the series.
func highest(xyss ...plotter.XYs) float64 {
	m := 0.0
	for _, xys := range xyss {
		for _, xy := range xys {
			m = max(m, xy.Y)
		}
	}
	return m
}

// liveFlowsPanel is the top panel: live flows in thousands, under the
// table's limit as a dashed line.
func liveFlowsPanel(r *Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("flowbench: %s, %d workers, %.2f Mpps, hit ratio %.3f", r.Impl, r.Workers, r.Mpps(), r.HitRatio())
	p.Y.Label.Text = "live flows (thousands)"
	p.Y.Min = 0
	live := series(r, func(s Sample) float64 { return float64(s.Live) / 1e3 })
	if err := addLine(p, live, blue, "live flows"); err != nil {
		return nil, err
	}
	p.Add(plotter.NewGrid())
	limit := float64(r.Limit) / 1e3
	lim, err := plotter.NewLine(plotter.XYs{{X: live[0].X, Y: limit}, {X: live[len(live)-1].X, Y: limit}})
	if err != nil {
		return nil, err
	}
	lim.Color, lim.Dashes = color.Gray{Y: 120}, []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(lim)
	p.Legend.Add("limit", lim)
	legendRoom(p, max(limit, highest(live)), 2)
	return p, nil
}

// heapPanel is the bottom panel, in MB: the heap with its garbage (which
// climbs after the drain until the next collection, as if it leaked), the
// heap in use (the spans that hold objects, garbage too until it is
// collected: what the process keeps), the objects the last collection
// found live (the trend without the garbage), the bytes the table says it
// holds (flowcache only), and the heap in use after a forced collection
// before the spike, at its end and after the drain (a model run only),
// whose share of the peak the title gives with what it measures.
func heapPanel(r *Report) (*plot.Plot, error) {
	p := plot.New()
	p.X.Label.Text = "simulated time (s)"
	p.Y.Label.Text = "heap (MB)"
	p.Y.Min = 0
	heap := series(r, func(s Sample) float64 { return float64(s.Heap) / 1e6 })
	if err := addLine(p, heap, red, "heap objects, garbage included (HeapAlloc): climbs until the next GC"); err != nil {
		return nil, err
	}
	inuse := series(r, func(s Sample) float64 { return float64(s.Inuse) / 1e6 })
	if err := addLine(p, inuse, orange, "heap in use: spans holding objects, garbage too (HeapInuse)", vg.Points(5), vg.Points(3)); err != nil {
		return nil, err
	}
	marked := series(r, func(s Sample) float64 { return float64(s.Marked) / 1e6 })
	if err := addLine(p, marked, green, "live objects at the last GC"); err != nil {
		return nil, err
	}
	p.Add(plotter.NewGrid())
	rows, top := 3, highest(heap, inuse, marked)
	if r.Impl == "flowcache" {
		table := series(r, func(s Sample) float64 { return float64(s.Table) / 1e6 })
		if err := addLine(p, table, blue, "table's own bytes (Stats.Bytes)"); err != nil {
			return nil, err
		}
		rows, top = rows+1, max(top, highest(table))
	}
	if r.HeapPeak > 0 && r.Capture == "" {
		pts, err := addHeapAfterGC(p, r)
		if err != nil {
			return nil, err
		}
		rows, top = rows+1, max(top, highest(pts))
		p.Title.Text = fmt.Sprintf("after the drain: %.0f %% of the peak's heap in use, with %.0f %% of its flows (README's 1.3 %%: 1 %% of them)",
			100*float64(r.InuseAfter)/float64(max(r.InusePeak, 1)), 100*float64(r.LiveEnd)/float64(max(r.LiveAtPeakGC, 1)))
	}
	legendRoom(p, top, rows)
	return p, nil
}

// addHeapAfterGC adds the three heaps in use measured after runtime.GC
// as dots, at the times the model takes them: 30 % (the spike starts),
// 50 % (it ends) and the end of the run; it returns them.
func addHeapAfterGC(p *plot.Plot, r *Report) (plotter.XYs, error) {
	var pts plotter.XYs
	for _, m := range []struct {
		frac float64
		b    uint64
	}{{0.3, r.InuseBefore}, {0.5, r.InusePeak}, {1, r.InuseAfter}} {
		pts = append(pts, plotter.XY{X: m.frac * r.SimElapsed.Seconds(), Y: float64(m.b) / 1e6})
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, err
	}
	sc.Color, sc.Shape, sc.Radius = color.Black, draw.CircleGlyph{}, vg.Points(3)
	p.Add(sc)
	p.Legend.Add("heap in use after runtime.GC", sc)
	return pts, nil
}

// savePanels draws top above bottom, their axes aligned, into an 8 × 6
// inch PNG at path.
func savePanels(path string, top, bottom *plot.Plot) error {
	img := vgimg.New(8*vg.Inch, 6*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(8)}
	cs := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(cs[0][0])
	bottom.Draw(cs[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
