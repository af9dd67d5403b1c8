package benchplot

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Drawing constants, in SVG user units (pixels).
const (
	svgWidth   = 760
	plotHeight = 320
	titleSize  = 17
	labelSize  = 13
	tickSize   = 12
	legendSize = 12.5
	noteSize   = 11
	legendRow  = 20
	charWidth  = 0.58 // average glyph width of sans-serif, in ems
	markerSize = 4.5
	fontFamily = "DejaVu Sans, Helvetica, Arial, sans-serif"
	gridColor  = "#e3e3e3"
	minorColor = "#f1f1f1"
	axisColor  = "#444"
	textColor  = "#222"
	noteColor  = "#666"
	refColor   = "#777"
	noteMargin = 18
	// maxDataTicks is how many distinct x values a log x axis may have
	// for each to be labelled instead of the powers of ten.
	maxDataTicks = 10
)

// palette is Okabe and Ito's, distinguishable with the common colour
// vision deficiencies; markers differ too.
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

var markers = []string{"circle", "square", "triangle", "diamond"}

var dashes = []string{"6 4", "2 3", "10 3 2 3"}

// textWidth estimates the rendered width of s at size.
func textWidth(s string, size float64) float64 {
	return float64(len([]rune(s))) * size * charWidth
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// legendLayout places the legend entries in rows under the plot; it
// returns each entry's offset within the legend and the legend's height.
func (f *Figure) legendLayout(width float64) (xs, ys []float64, height float64) {
	x, y := 0.0, 0.0
	for _, s := range f.Series {
		w := 34 + textWidth(s.Label, legendSize) + 22
		if x > 0 && x+w > width {
			x, y = 0, y+legendRow
		}
		xs, ys = append(xs, x), append(ys, y)
		x += w
	}
	if len(f.Series) > 0 {
		height = y + legendRow
	}
	return xs, ys, height
}

// wrap splits s into lines of at most n characters at spaces.
func wrap(s string, n int) []string {
	var lines []string
	var cur string
	for _, w := range strings.Fields(s) {
		if cur != "" && len([]rune(cur))+1+len([]rune(w)) > n {
			lines = append(lines, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}

// WriteSVG draws the figure: a white background, title, axes with ticks,
// grid and labels, one line per series with a marker and a lowest-highest
// bar at each point, reference lines dashed, the legend and the note
// under the plot.
func (f *Figure) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }

	var xs, ys []float64
	for _, s := range f.Series {
		for _, pt := range s.Points {
			xs = append(xs, pt.X)
			ys = append(ys, pt.Lo, pt.Y, pt.Hi)
		}
	}
	xa := newAxis(xs, f.XLog, false, "")
	if distinct := uniq(xs); f.XLog && len(distinct) <= maxDataTicks {
		xa = xa.labelAt(distinct, "")
	}
	ya := newAxis(ys, f.YLog, f.YZero, f.YKind)

	yTickW := 0.0
	for _, t := range ya.ticks {
		yTickW = max(yTickW, textWidth(t.label, tickSize))
	}
	left := 18 + labelSize + 10 + yTickW + 8
	right := 28.0
	top := 24 + titleSize + 18.0
	plotW := svgWidth - left - right
	legendX, legendY, legendH := f.legendLayout(plotW)
	noteChars := (svgWidth - 2*noteMargin) / (noteSize * charWidth)
	notes := wrap(f.Note, int(noteChars))
	bottom := 8 + tickSize + 12 + labelSize + 14 + legendH + float64(len(notes))*(noteSize+4) + 12
	height := math.Ceil(top + plotHeight + bottom)

	px := func(v float64) float64 { return left + xa.pos(v)*plotW }
	py := func(v float64) float64 { return top + (1-ya.pos(v))*plotHeight }
	ok := func(v float64, a axis) bool { return !a.log || v > 0 }

	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" font-family="%s" role="img">`+"\n",
		svgWidth, height, svgWidth, height, fontFamily)
	p("<title>%s</title>\n", esc(f.Title))
	p(`<rect width="100%%" height="100%%" fill="#fff"/>` + "\n")
	p(`<text class="title" x="%.1f" y="%.1f" font-size="%d" font-weight="bold" fill="%s" text-anchor="middle">%s</text>`+"\n",
		left+plotW/2, 24.0+titleSize/2+4, titleSize, textColor, esc(f.Title))

	// Grid and ticks.
	p(`<g class="grid" stroke-width="1" fill="none">` + "\n")
	for _, t := range xa.ticks {
		c := gridColor
		if t.label == "" {
			c = minorColor
		}
		x := px(t.v)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, top, x, top+plotHeight, c)
	}
	for _, t := range ya.ticks {
		c := gridColor
		if t.label == "" {
			c = minorColor
		}
		y := py(t.v)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, y, left+plotW, y, c)
	}
	p("</g>\n")
	p(`<rect class="frame" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="%s"/>`+"\n", left, top, plotW, float64(plotHeight), axisColor)
	p(`<g class="ticks" font-size="%d" fill="%s">`+"\n", tickSize, textColor)
	for _, t := range xa.ticks {
		x := px(t.v)
		l := 6.0
		if t.label == "" {
			l = 3
		}
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, top+plotHeight, x, top+plotHeight+l, axisColor)
		if t.label != "" {
			p(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, top+plotHeight+8+tickSize, esc(t.label))
		}
	}
	for _, t := range ya.ticks {
		y := py(t.v)
		l := 6.0
		if t.label == "" {
			l = 3
		}
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left-l, y, left, y, axisColor)
		if t.label != "" {
			p(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+tickSize*0.35, esc(t.label))
		}
	}
	p("</g>\n")

	// Axis titles.
	xLabelY := top + plotHeight + 8 + tickSize + 12 + labelSize
	p(`<text class="xlabel" x="%.1f" y="%.1f" font-size="%d" fill="%s" text-anchor="middle">%s</text>`+"\n",
		left+plotW/2, xLabelY, labelSize, textColor, esc(f.XLabel))
	yl := 18 + labelSize*0.8
	p(`<text class="ylabel" x="%.1f" y="%.1f" font-size="%d" fill="%s" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n",
		yl, top+plotHeight/2, labelSize, textColor, yl, top+plotHeight/2, esc(f.YLabel))

	// Series, clipped to the plot area.
	p(`<clipPath id="plotarea"><rect x="%.1f" y="%.1f" width="%.1f" height="%d"/></clipPath>`+"\n", left, top-markerSize*2, plotW, plotHeight+int(markerSize*4))
	colour, dash := 0, 0
	styles := make([]struct{ color, dash, marker string }, len(f.Series))
	for i, s := range f.Series {
		if s.Ref {
			styles[i].color, styles[i].dash = refColor, dashes[dash%len(dashes)]
			dash++
			continue
		}
		styles[i].color = palette[colour%len(palette)]
		styles[i].marker = markers[colour%len(markers)]
		colour++
	}
	for i, s := range f.Series {
		st := styles[i]
		p(`<g class="series" data-label="%s" clip-path="url(#plotarea)">`+"\n", esc(s.Label))
		var pts []string
		for _, pt := range s.Points {
			if ok(pt.X, xa) && ok(pt.Y, ya) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(pt.X), py(pt.Y)))
			}
		}
		dashAttr := ""
		if st.dash != "" {
			dashAttr = fmt.Sprintf(` stroke-dasharray="%s"`, st.dash)
		}
		width := 2.2
		if s.Ref {
			width = 1.6
		}
		p(`<polyline class="line" points="%s" fill="none" stroke="%s" stroke-width="%.1f" stroke-linejoin="round"%s/>`+"\n",
			strings.Join(pts, " "), st.color, width, dashAttr)
		if !s.Ref {
			for _, pt := range s.Points {
				if !ok(pt.X, xa) || !ok(pt.Y, ya) {
					continue
				}
				x, y := px(pt.X), py(pt.Y)
				if pt.Hi > pt.Lo && ok(pt.Lo, ya) {
					y0, y1 := py(pt.Lo), py(pt.Hi)
					p(`<path class="range" d="M%.1f %.1fV%.1fM%.1f %.1fh6M%.1f %.1fh6" stroke="%s" stroke-width="1.2" opacity="0.75"/>`+"\n",
						x, y0, y1, x-3, y0, x-3, y1, st.color)
				}
				p(`%s<title>%s</title></%s>`+"\n", markerOpen(st.marker, x, y, st.color), esc(pointTitle(s.Label, pt, f.YKind)), markerTag(st.marker))
			}
		}
		p("</g>\n")
	}

	// Legend.
	ly := xLabelY + 14
	p(`<g class="legend" font-size="%.1f" fill="%s">`+"\n", legendSize, textColor)
	for i, s := range f.Series {
		st := styles[i]
		x, y := left+legendX[i], ly+legendY[i]+legendRow/2
		dashAttr := ""
		if st.dash != "" {
			dashAttr = fmt.Sprintf(` stroke-dasharray="%s"`, st.dash)
		}
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x, y, x+28, y, st.color, dashAttr)
		if st.marker != "" {
			p(`%s</%s>`+"\n", markerOpen(st.marker, x+14, y, st.color), markerTag(st.marker))
		}
		p(`<text x="%.1f" y="%.1f">%s</text>`+"\n", x+34, y+legendSize*0.35, esc(s.Label))
	}
	p("</g>\n")

	// Note.
	if len(notes) > 0 {
		p(`<g class="note" font-size="%d" fill="%s">`+"\n", noteSize, noteColor)
		for i, line := range notes {
			p(`<text x="%d" y="%.1f">%s</text>`+"\n", noteMargin, ly+legendH+8+float64(i+1)*(noteSize+4)-4, esc(line))
		}
		p("</g>\n")
	}
	p("</svg>\n")
	return bw.Flush()
}

// markerTag is the element name of a marker shape.
func markerTag(shape string) string {
	if shape == "circle" {
		return "circle"
	}
	return "path"
}

// markerOpen is the opening tag of a marker at x, y (closed by the caller,
// so that a <title> can go inside).
func markerOpen(shape string, x, y float64, color string) string {
	r := markerSize
	attrs := fmt.Sprintf(`class="point" fill="%s" stroke="#fff" stroke-width="1"`, color)
	switch shape {
	case "square":
		r *= 0.9
		return fmt.Sprintf(`<path %s d="M%.1f %.1fh%.1fv%.1fh%.1fz">`, attrs, x-r, y-r, 2*r, 2*r, -2*r)
	case "triangle":
		r *= 1.2
		return fmt.Sprintf(`<path %s d="M%.1f %.1fL%.1f %.1fL%.1f %.1fz">`, attrs, x, y-r, x+r, y+r*0.75, x-r, y+r*0.75)
	case "diamond":
		r *= 1.2
		return fmt.Sprintf(`<path %s d="M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fz">`, attrs, x, y-r, x+r, y, x, y+r, x-r, y)
	}
	return fmt.Sprintf(`<circle %s cx="%.1f" cy="%.1f" r="%.1f">`, attrs, x, y, r)
}

// pointTitle is the tooltip of a point.
func pointTitle(label string, pt Point, kind string) string {
	s := fmt.Sprintf("%s at %s: %s", label, formatValue(pt.X, "", -1), formatValue(pt.Y, kind, -1))
	if kind == "ratio" {
		s = fmt.Sprintf("%s at %s: %s", label, formatValue(pt.X, "", -1), formatNum(pt.Y, 2))
	}
	if pt.Runs > 1 {
		lo, hi := formatValue(pt.Lo, kind, -1), formatValue(pt.Hi, kind, -1)
		if kind == "ratio" {
			lo, hi = formatNum(pt.Lo, 2), formatNum(pt.Hi, 2)
		}
		s += fmt.Sprintf(" (median of %d, %s to %s)", pt.Runs, lo, hi)
	}
	return s
}

// uniq returns the distinct values of vs in increasing order.
func uniq(vs []float64) []float64 {
	out := slices.Clone(vs)
	slices.Sort(out)
	return slices.Compact(out)
}
