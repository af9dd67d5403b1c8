package benchplot

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Spec describes the plots of one figure set: docs/plots/plots.json.
type Spec struct {
	Plots []PlotSpec `json:"plots"`
}

// PlotSpec is one plot: which results, which parameter on the x axis,
// which metric on the y axis, and how to label them.
type PlotSpec struct {
	// File is the SVG's file name, relative to the output directory.
	File string `json:"file"`
	// Title, XLabel and YLabel label the plot. Tick labels carry the
	// unit of times (ns ... s); name any other unit in the label.
	Title  string `json:"title"`
	XLabel string `json:"xLabel"`
	YLabel string `json:"yLabel"`
	// Match selects the results (a regular expression on the full name,
	// without the GOMAXPROCS suffix).
	Match string `json:"match"`
	// X is the sub-benchmark parameter on the x axis: "members" reads
	// the x of "BenchmarkX/members=100/commit" as 100.
	X string `json:"x"`
	// Metric is the unit plotted: "ns/op" (drawn as seconds), "msgs/s",
	// any custom b.ReportMetric unit.
	Metric string `json:"metric"`
	// Labels names the series: the key is a series key, the benchmark
	// name without its x element ("BenchmarkX/memsec=false" for
	// "BenchmarkX/memsec=false/members=10" with x "members"). Series
	// without a label keep their key; series labelled "" are left out;
	// labels of series that are not in the results are ignored.
	Labels map[string]string `json:"labels,omitempty"`
	// Order lists series keys (or ratio and reference labels) in legend
	// order; the others follow alphabetically.
	Order []string `json:"order,omitempty"`
	// Ratios, when set, replace the series by ratios between them (Num
	// and Den are series keys): each point is the median over runs of
	// Num's metric / Den's metric, the i-th run of one paired with the
	// i-th of the other.
	Ratios []RatioSpec `json:"ratios,omitempty"`
	// Refs are reference lines drawn dashed, without markers.
	Refs []RefSpec `json:"refs,omitempty"`
	// XLog and YLog choose the scales: "log", "linear", or "" for log
	// when the values span a factor of 20 or more.
	XLog string `json:"xScale,omitempty"`
	YLog string `json:"yScale,omitempty"`
	// YZero makes a linear y axis start at zero.
	YZero bool `json:"yZero,omitempty"`
	// Note is a line of small print under the plot (what was measured,
	// where); Build appends the run count and the machine.
	Note string `json:"note,omitempty"`
}

// RatioSpec is one ratio series of a plot.
type RatioSpec struct {
	Label string `json:"label"`
	Num   string `json:"num"`
	Den   string `json:"den"`
}

// RefSpec is a reference line: the median of Metric over the results
// matching Match (one benchmark without the x parameter, such as a raw
// building block), or Value if Match is empty (a target), multiplied by
// (x + XOffset) when PerX is set.
type RefSpec struct {
	Label   string  `json:"label"`
	Match   string  `json:"match,omitempty"`
	Metric  string  `json:"metric,omitempty"`
	Value   float64 `json:"value,omitempty"`
	PerX    bool    `json:"perX,omitempty"`
	XOffset float64 `json:"xOffset,omitempty"`
}

// ReadSpec decodes a Spec, rejecting unknown fields.
func ReadSpec(r io.Reader) (*Spec, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("plot spec: %w", err)
	}
	for i, p := range s.Plots {
		if p.File == "" || p.Match == "" || p.X == "" || p.Metric == "" {
			return nil, fmt.Errorf("plot spec: plot %d: file, match, x and metric are required", i+1)
		}
	}
	return &s, nil
}

// Point is one x of a series: the median over runs and its range.
type Point struct {
	X, Y, Lo, Hi float64
	Runs         int
}

// Series is one line of a figure.
type Series struct {
	Label  string
	Points []Point
	// Ref marks a reference line: dashed, without markers.
	Ref bool
}

// Figure is a plot ready to draw.
type Figure struct {
	Title, XLabel, YLabel string
	// YKind says how y values are written: "time" (seconds: ns, µs, ms,
	// s), "ratio" (plain numbers), or "" (SI prefixes: k, M, G).
	YKind      string
	XLog, YLog bool
	YZero      bool
	Series     []Series
	Note       string
}

// Build makes the figure of p from the results in s.
func Build(s *Set, p PlotSpec) (*Figure, error) {
	re, err := regexp.Compile(p.Match)
	if err != nil {
		return nil, fmt.Errorf("%s: match: %w", p.File, err)
	}
	// samples[series][x] are the metric's values in input order.
	samples := map[string]map[float64][]float64{}
	for _, r := range s.Results {
		if !re.MatchString(r.Name) {
			continue
		}
		v, ok := r.Values[p.Metric]
		if !ok {
			continue
		}
		xs, ok := r.Param(p.X)
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(xs, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %s=%q is not a number", p.File, r.Name, p.X, xs)
		}
		if p.Metric == "ns/op" {
			v /= 1e9
		}
		key := r.seriesKey(p.X)
		if samples[key] == nil {
			samples[key] = map[float64][]float64{}
		}
		samples[key][x] = append(samples[key][x], v)
	}
	if len(samples) == 0 {
		return nil, fmt.Errorf("%s: no results match %q with %s=N and %s", p.File, p.Match, p.X, p.Metric)
	}
	f := &Figure{Title: p.Title, XLabel: p.XLabel, YLabel: p.YLabel, YZero: p.YZero}
	runs, minRuns := 0, math.MaxInt
	if len(p.Ratios) > 0 {
		f.YKind = "ratio"
		for _, rs := range p.Ratios {
			num, den := samples[rs.Num], samples[rs.Den]
			if num == nil || den == nil {
				return nil, fmt.Errorf("%s: ratio %q: no series %q or %q (have %s)", p.File, rs.Label, rs.Num, rs.Den, keys(samples))
			}
			ser := Series{Label: rs.Label}
			for x, nv := range num {
				dv := den[x]
				n := min(len(nv), len(dv))
				if n == 0 {
					continue
				}
				ratios := make([]float64, n)
				for i := range n {
					ratios[i] = nv[i] / dv[i]
				}
				ser.Points = append(ser.Points, summarize(x, ratios))
				runs, minRuns = max(runs, n), min(minRuns, n)
			}
			f.Series = append(f.Series, ser)
		}
	} else {
		if p.Metric == "ns/op" {
			f.YKind = "time"
		}
		for key, byX := range samples {
			label, ok := p.Labels[key]
			if !ok {
				label = key
			} else if label == "" {
				continue
			}
			ser := Series{Label: label}
			for x, vs := range byX {
				ser.Points = append(ser.Points, summarize(x, vs))
				runs, minRuns = max(runs, len(vs)), min(minRuns, len(vs))
			}
			f.Series = append(f.Series, ser)
		}
	}
	for i := range f.Series {
		sort.Slice(f.Series[i].Points, func(a, b int) bool { return f.Series[i].Points[a].X < f.Series[i].Points[b].X })
	}
	order := map[string]int{}
	for i, k := range p.Order {
		order[k] = i + 1
		if l, ok := p.Labels[k]; ok {
			order[l] = i + 1
		}
	}
	rank := func(l string) int {
		if r, ok := order[l]; ok {
			return r
		}
		return len(order) + 1
	}
	sort.SliceStable(f.Series, func(a, b int) bool {
		ra, rb := rank(f.Series[a].Label), rank(f.Series[b].Label)
		if ra != rb {
			return ra < rb
		}
		return f.Series[a].Label < f.Series[b].Label
	})
	for _, ref := range p.Refs {
		ser, err := buildRef(s, p, ref, f.Series)
		if err != nil {
			return nil, err
		}
		f.Series = append(f.Series, ser)
	}
	xs, ys := f.extents()
	f.XLog = chooseLog(p.XLog, xs)
	f.YLog = chooseLog(p.YLog, ys)
	f.Note = p.Note
	var tail []string
	switch {
	case runs > 1 && minRuns < runs:
		tail = append(tail, fmt.Sprintf("medians of %d to %d runs, bars from lowest to highest", minRuns, runs))
	case runs > 1:
		tail = append(tail, fmt.Sprintf("medians of %d runs, bars from lowest to highest", runs))
	case runs == 1:
		tail = append(tail, "one run")
	}
	if cpu := s.Config["cpu"]; cpu != "" {
		tail = append(tail, strings.TrimSpace(cpu))
	}
	if len(tail) > 0 {
		if f.Note != "" {
			f.Note += "; "
		}
		f.Note += strings.Join(tail, "; ")
	}
	return f, nil
}

// buildRef makes a reference line over the x values of the series.
func buildRef(s *Set, p PlotSpec, ref RefSpec, series []Series) (Series, error) {
	m, runs := ref.Value, 0
	if ref.Match != "" {
		re, err := regexp.Compile(ref.Match)
		if err != nil {
			return Series{}, fmt.Errorf("%s: ref %q: %w", p.File, ref.Label, err)
		}
		var vs []float64
		for _, r := range s.Results {
			if v, ok := r.Values[ref.Metric]; ok && re.MatchString(r.Name) {
				if ref.Metric == "ns/op" {
					v /= 1e9
				}
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return Series{}, fmt.Errorf("%s: ref %q: no results match %q with %s", p.File, ref.Label, ref.Match, ref.Metric)
		}
		m, runs = median(vs), len(vs)
	}
	var xs []float64
	for _, ser := range series {
		for _, pt := range ser.Points {
			if !slices.Contains(xs, pt.X) {
				xs = append(xs, pt.X)
			}
		}
	}
	slices.Sort(xs)
	out := Series{Label: ref.Label, Ref: true}
	for _, x := range xs {
		y := m
		if ref.PerX {
			y *= x + ref.XOffset
		}
		if y > 0 || !ref.PerX {
			out.Points = append(out.Points, Point{X: x, Y: y, Lo: y, Hi: y, Runs: runs})
		}
	}
	return out, nil
}

// summarize is the median and range of vs at x.
func summarize(x float64, vs []float64) Point {
	return Point{X: x, Y: median(vs), Lo: slices.Min(vs), Hi: slices.Max(vs), Runs: len(vs)}
}

// median of vs (not empty); the mean of the middle two for an even count.
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// extents returns every x and every y (ranges included) of the figure.
func (f *Figure) extents() (xs, ys []float64) {
	for _, s := range f.Series {
		for _, p := range s.Points {
			xs = append(xs, p.X)
			ys = append(ys, p.Y, p.Lo, p.Hi)
		}
	}
	return xs, ys
}

// chooseLog applies a scale setting: "log", "linear", or automatic (log
// when all values are positive and span a factor of 20 or more).
func chooseLog(setting string, vs []float64) bool {
	switch setting {
	case "log":
		return true
	case "linear":
		return false
	}
	if len(vs) == 0 {
		return false
	}
	lo, hi := slices.Min(vs), slices.Max(vs)
	return lo > 0 && hi/lo >= 20 && !math.IsInf(hi, 0)
}

func keys(m map[string]map[float64][]float64) string {
	var ks []string
	for k := range m {
		ks = append(ks, strconv.Quote(k))
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}
