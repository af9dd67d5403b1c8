package benchplot

import (
	"math"
	"strconv"
	"strings"
)

// tick is one labelled or unlabelled (minor) axis tick.
type tick struct {
	v     float64
	label string // "" for a minor tick
}

// axis maps data values onto a pixel range.
type axis struct {
	lo, hi float64 // data range shown
	log    bool
	ticks  []tick
}

// pos maps v into [0, 1] along the axis.
func (a axis) pos(v float64) float64 {
	if a.log {
		return (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// newAxis chooses the range and ticks for values vs (positive ones only on
// a log axis), formatted by kind.
func newAxis(vs []float64, log, zero bool, kind string) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if log && v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo > hi { // nothing to show
		lo, hi = 0, 1
		if log {
			lo, hi = 1, 10
		}
	}
	if log {
		return logAxis(lo, hi, kind)
	}
	return linearAxis(lo, hi, zero, kind)
}

// labelAt relabels a log axis: its labelled ticks become the values at
// (the data's own x values, when there are few), the others minor ticks.
func (a axis) labelAt(at []float64, kind string) axis {
	var ticks []tick
	for _, t := range a.ticks {
		dup := false
		for _, v := range at {
			if math.Abs(t.v-v) <= 1e-9*math.Abs(v) {
				dup = true
			}
		}
		if !dup {
			ticks = append(ticks, tick{v: t.v})
		}
	}
	for _, v := range at {
		if v > 0 && v >= a.lo && v <= a.hi {
			ticks = append(ticks, tick{v: v, label: formatExact(v, kind)})
		}
	}
	a.ticks = ticks
	return a
}

// formatExact is formatValue when that writes v exactly (10k, 300k, 1M),
// and all of v's digits otherwise (1024, not 1.02k).
func formatExact(v float64, kind string) string {
	s := formatValue(v, kind, -1)
	if kind != "" {
		return s
	}
	num, mult := s, 1.0
	for suffix, m := range map[string]float64{"k": 1e3, "M": 1e6, "G": 1e9} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			num, mult = n, m
		}
	}
	if f, err := strconv.ParseFloat(num, 64); err == nil && math.Abs(f*mult-v) <= 1e-9*math.Abs(v) {
		return s
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// linearAxis spans lo..hi (and zero if asked) with about six nice ticks.
func linearAxis(lo, hi float64, zero bool, kind string) axis {
	if zero {
		lo, hi = min(lo, 0), max(hi, 0)
	}
	if hi == lo {
		d := math.Max(math.Abs(hi)*0.1, 1e-12)
		lo, hi = lo-d, hi+d
		if zero && lo < 0 && hi > 0 && lo+d >= 0 {
			lo = 0
		}
	}
	step := niceStep((hi - lo) / 6)
	a := axis{lo: math.Floor(lo/step+1e-9) * step, hi: math.Ceil(hi/step-1e-9) * step}
	// Leave a little room above the highest point.
	if (a.hi-hi)/(a.hi-a.lo) < 0.04 {
		a.hi += step
	}
	decimals := max(0, -int(math.Floor(math.Log10(step)+1e-9)))
	if m := step / math.Pow(10, math.Floor(math.Log10(step)+1e-9)); math.Abs(m-2.5) < 1e-9 {
		decimals++
	}
	for v := a.lo; v <= a.hi+step/2; v += step {
		r := math.Round(v/step) * step
		a.ticks = append(a.ticks, tick{v: r, label: formatValue(r, kind, decimals)})
	}
	return a
}

// niceStep rounds raw up to 1, 2, 2.5 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// logAxis spans lo..hi with a margin, labelling 1-2-5 steps over at most
// three decades and powers of ten over more (with unlabelled minor ticks).
func logAxis(lo, hi float64, kind string) axis {
	a := axis{log: true, lo: lo / 1.25, hi: hi * 1.25}
	decades := math.Log10(a.hi / a.lo)
	var labelled []float64
	switch {
	case decades <= 1.2:
		labelled = []float64{1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9}
	case decades <= 3.5:
		labelled = []float64{1, 2, 5}
	default:
		labelled = []float64{1}
	}
	for e := math.Floor(math.Log10(a.lo)); e <= math.Ceil(math.Log10(a.hi)); e++ {
		p := math.Pow(10, e)
		for m := 1.0; m < 10; m++ {
			for _, mm := range []float64{m, m + 0.5} {
				v := mm * p
				if v < a.lo || v > a.hi {
					continue
				}
				isLabel := false
				for _, l := range labelled {
					if math.Abs(l-mm) < 1e-9 {
						isLabel = true
					}
				}
				switch {
				case isLabel:
					a.ticks = append(a.ticks, tick{v: v, label: formatValue(v, kind, -1)})
				case mm == m: // minor ticks at whole multiples only
					a.ticks = append(a.ticks, tick{v: v})
				}
			}
		}
	}
	return a
}

// formatValue writes v for an axis of the given kind with decimals digits
// after the point (-1: as few as needed, at most 3 significant).
func formatValue(v float64, kind string, decimals int) string {
	switch kind {
	case "time":
		if v == 0 {
			return "0"
		}
		units := []struct {
			scale float64
			name  string
		}{{1, "s"}, {1e-3, "ms"}, {1e-6, "µs"}, {1e-9, "ns"}}
		for _, u := range units {
			if math.Abs(v) >= u.scale*(1-1e-9) || u.name == "ns" {
				return formatNum(v/u.scale, -1) + " " + u.name
			}
		}
	case "ratio":
		return formatNum(v, decimals)
	}
	// SI prefixes.
	for _, u := range []struct {
		scale float64
		name  string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(v) >= u.scale*(1-1e-9) {
			return formatNum(v/u.scale, -1) + u.name
		}
	}
	return formatNum(v, decimals)
}

// formatNum writes v with decimals digits after the point, or with -1 in
// at most three significant digits without trailing zeros.
func formatNum(v float64, decimals int) string {
	if decimals >= 0 {
		return strconv.FormatFloat(v, 'f', decimals, 64)
	}
	if v == 0 {
		return "0"
	}
	mag := int(math.Floor(math.Log10(math.Abs(v))))
	d := max(0, 2-mag)
	s := strconv.FormatFloat(v, 'f', d, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
