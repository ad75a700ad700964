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

// writePlot draws live flows (top) and heap (bottom) over the run's
// simulated time into a PNG at path.
func writePlot(path string, r *Report) error {
	if len(r.Samples) < 2 {
		return fmt.Errorf("plot: %d samples, need two", len(r.Samples))
	}
	live := make(plotter.XYs, len(r.Samples))
	heap := make(plotter.XYs, len(r.Samples))
	table := make(plotter.XYs, len(r.Samples))
	for i, s := range r.Samples {
		live[i] = plotter.XY{X: s.SimT, Y: float64(s.Live) / 1e3}
		heap[i] = plotter.XY{X: s.SimT, Y: float64(s.Heap) / 1e6}
		table[i] = plotter.XY{X: s.SimT, Y: float64(s.Table) / 1e6}
	}
	blue := color.RGBA{R: 31, G: 119, B: 180, A: 255}
	red := color.RGBA{R: 214, G: 39, B: 40, A: 255}

	top := plot.New()
	top.Title.Text = fmt.Sprintf("flowbench: %s, %d workers, %.2f Mpps, hit ratio %.3f", r.Impl, r.Workers, r.Mpps(), r.HitRatio())
	top.Y.Label.Text = "live flows (thousands)"
	top.Y.Min = 0
	l, err := plotter.NewLine(live)
	if err != nil {
		return err
	}
	l.Color, l.Width = blue, vg.Points(1.5)
	top.Add(l, plotter.NewGrid())
	lim, err := plotter.NewLine(plotter.XYs{{X: live[0].X, Y: float64(r.Limit) / 1e3}, {X: live[len(live)-1].X, Y: float64(r.Limit) / 1e3}})
	if err != nil {
		return err
	}
	lim.Color, lim.Dashes = color.Gray{Y: 120}, []vg.Length{vg.Points(4), vg.Points(3)}
	top.Add(lim)
	top.Legend.Add("live flows", l)
	top.Legend.Add("limit", lim)
	top.Legend.Top, top.Legend.Left = true, true

	bot := plot.New()
	bot.X.Label.Text = "simulated time (s)"
	bot.Y.Label.Text = "heap (MB)"
	bot.Y.Min = 0
	h, err := plotter.NewLine(heap)
	if err != nil {
		return err
	}
	h.Color, h.Width = red, vg.Points(1.5)
	bot.Add(h, plotter.NewGrid())
	bot.Legend.Add("heap objects, garbage included", h)
	if r.Impl == "flowcache" {
		tl, err := plotter.NewLine(table)
		if err != nil {
			return err
		}
		tl.Color, tl.Width = blue, vg.Points(1.5)
		bot.Add(tl)
		bot.Legend.Add("table's own bytes (Stats.Bytes)", tl)
	}
	if r.HeapPeak > 0 && r.Capture == "" {
		pts := plotter.XYs{}
		for _, p := range []struct {
			frac float64
			b    uint64
		}{{0.3, r.HeapBefore}, {0.5, r.HeapPeak}, {1, r.HeapAfter}} {
			pts = append(pts, plotter.XY{X: p.frac * r.SimElapsed.Seconds(), Y: float64(p.b) / 1e6})
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.Color, sc.Shape, sc.Radius = color.Black, draw.CircleGlyph{}, vg.Points(3)
		bot.Add(sc)
		bot.Legend.Add("heap held after runtime.GC", sc)
	}
	bot.Legend.Top, bot.Legend.Left = true, true
	top.X.Min, top.X.Max = 0, max(live[len(live)-1].X, r.SimElapsed.Seconds())
	bot.X.Min, bot.X.Max = top.X.Min, top.X.Max

	img := vgimg.New(8*vg.Inch, 6*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(8)}
	cs := plot.Align([][]*plot.Plot{{top}, {bot}}, tiles, dc)
	top.Draw(cs[0][0])
	bot.Draw(cs[1][0])
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
