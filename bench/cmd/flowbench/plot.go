package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	blue = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	red  = color.RGBA{R: 214, G: 39, B: 40, A: 255}
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

// addLine adds a solid line to p, with its legend entry.
func addLine(p *plot.Plot, xys plotter.XYs, c color.Color, legend string) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color, l.Width = c, vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(legend, l)
	return nil
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
	p.Legend.Top, p.Legend.Left = true, true
	return p, nil
}

// heapPanel is the bottom panel, in MB: the heap with its garbage, the
// bytes the table says it holds (flowcache only), and the heap held after
// a forced collection before the spike, at its end and after the drain
// (a model run only).
func heapPanel(r *Report) (*plot.Plot, error) {
	p := plot.New()
	p.X.Label.Text = "simulated time (s)"
	p.Y.Label.Text = "heap (MB)"
	p.Y.Min = 0
	heap := series(r, func(s Sample) float64 { return float64(s.Heap) / 1e6 })
	if err := addLine(p, heap, red, "heap objects, garbage included"); err != nil {
		return nil, err
	}
	p.Add(plotter.NewGrid())
	if r.Impl == "flowcache" {
		table := series(r, func(s Sample) float64 { return float64(s.Table) / 1e6 })
		if err := addLine(p, table, blue, "table's own bytes (Stats.Bytes)"); err != nil {
			return nil, err
		}
	}
	if r.HeapPeak > 0 && r.Capture == "" {
		if err := addHeapAfterGC(p, r); err != nil {
			return nil, err
		}
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p, nil
}

// addHeapAfterGC adds the three heaps measured after runtime.GC as dots,
// at the times the model takes them: 30 % (the spike starts), 50 % (it
// ends) and the end of the run.
func addHeapAfterGC(p *plot.Plot, r *Report) error {
	var pts plotter.XYs
	for _, m := range []struct {
		frac float64
		b    uint64
	}{{0.3, r.HeapBefore}, {0.5, r.HeapPeak}, {1, r.HeapAfter}} {
		pts = append(pts, plotter.XY{X: m.frac * r.SimElapsed.Seconds(), Y: float64(m.b) / 1e6})
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return err
	}
	sc.Color, sc.Shape, sc.Radius = color.Black, draw.CircleGlyph{}, vg.Points(3)
	p.Add(sc)
	p.Legend.Add("heap held after runtime.GC", sc)
	return nil
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
