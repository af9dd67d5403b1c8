package benchplot

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

// realOutput is go test -bench output as the sweeps print it: two
// packages, custom metrics, -count repeats, a log line that splits a
// result from its name, and the lines around results.
const realOutput = `goos: linux
goarch: amd64
pkg: github.com/epochlog/epochlog/engine
cpu: Oxide Virtual Turin-like Processor             
BenchmarkE2EGroupSweep/memsec=false/members=2-2         	     222	   5874436 ns/op	       170.2 deliveries/s	       170.2 msgs/s	  205427 B/op	    2487 allocs/op
BenchmarkE2EGroupSweep/memsec=false/members=2-2         	     230	   5600000 ns/op	       178.0 deliveries/s	       178.0 msgs/s	  205427 B/op	    2487 allocs/op
BenchmarkE2EGroupSweep/memsec=false/members=2-2         	     210	   6100000 ns/op	       163.9 deliveries/s	       163.9 msgs/s	  205427 B/op	    2487 allocs/op
BenchmarkE2EGroupSweep/memsec=false/members=100-2       	       3	 408130477 ns/op	       242.6 deliveries/s	         2.450 msgs/s	22408925 B/op	  259577 allocs/op
BenchmarkE2EGroupSweep/memsec=true/members=2-2          	     192	   7080501 ns/op	       141.2 deliveries/s	       141.2 msgs/s	  207970 B/op	    2552 allocs/op
BenchmarkE2EGroupSweep/memsec=true/members=100-2        	       2	 662270921 ns/op	       149.5 deliveries/s	         1.510 msgs/s	25629104 B/op	  293603 allocs/op
PASS
ok  	github.com/epochlog/epochlog/engine	43.511s
goos: linux
goarch: amd64
pkg: github.com/epochlog/epochlog/eventlog
cpu: Oxide Virtual Turin-like Processor             
BenchmarkAppendInFlight/inflight=1/raw-2     	   10000	     70503 ns/op	  10.00 MB/s	     14184 ops/s	    4755 B/op	      43 allocs/op
BenchmarkAppendInFlight/inflight=1/raw-2     	   10000	     70503 ns/op	  10.00 MB/s	     10000 ops/s	    4755 B/op	      43 allocs/op
BenchmarkAppendInFlight/inflight=1/sealed-2             	   10000	    101169 ns/op	   6.97 MB/s	      9884 ops/s	    8320 B/op	      71 allocs/op
BenchmarkAppendInFlight/inflight=1/sealed-2             	   10000	    101169 ns/op	   6.97 MB/s	      9000 ops/s	    8320 B/op	      71 allocs/op
BenchmarkAppendInFlight/inflight=1024/raw-2             	   10000	     13176 ns/op	  53.51 MB/s	     75897 ops/s	    4432 B/op	      36 allocs/op
BenchmarkAppendInFlight/inflight=1024/sealed-2          	   10000	     21714 ns/op	  32.47 MB/s	     46053 ops/s	    8383 B/op	      66 allocs/op
BenchmarkAppendInFlight/inflight=1024/sealed-2          	2026/12/05 10:00:00 INFO a log line in between
   10000	     23000 ns/op	  30.00 MB/s	     43000 ops/s	    8383 B/op	      66 allocs/op
PASS
ok  	github.com/epochlog/epochlog/eventlog	8.350s
`

func parse(t *testing.T, s string) *Set {
	t.Helper()
	set, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestParse(t *testing.T) {
	set := parse(t, realOutput)
	if got, want := len(set.Results), 13; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	r := set.Results[0]
	if r.Name != "BenchmarkE2EGroupSweep/memsec=false/members=2" || r.Procs != 2 || r.Iterations != 222 {
		t.Errorf("first result %q procs %d N %d", r.Name, r.Procs, r.Iterations)
	}
	if r.Pkg != "github.com/epochlog/epochlog/engine" {
		t.Errorf("pkg %q", r.Pkg)
	}
	for unit, want := range map[string]float64{"ns/op": 5874436, "msgs/s": 170.2, "deliveries/s": 170.2, "B/op": 205427, "allocs/op": 2487} {
		if got := r.Values[unit]; got != want {
			t.Errorf("%s = %v, want %v", unit, got, want)
		}
	}
	if v, ok := r.Param("members"); !ok || v != "2" {
		t.Errorf("members = %q %v", v, ok)
	}
	if got := r.seriesKey("members"); got != "BenchmarkE2EGroupSweep/memsec=false" {
		t.Errorf("series key %q", got)
	}
	last := set.Results[len(set.Results)-1]
	if last.Name != "BenchmarkAppendInFlight/inflight=1024/sealed" || last.Values["ops/s"] != 43000 || last.Pkg != "github.com/epochlog/epochlog/eventlog" {
		t.Errorf("split result: %+v", last)
	}
	if got := set.Results[7].Values["MB/s"]; got != 10 {
		t.Errorf("MB/s = %v", got)
	}
	if set.Config["cpu"] != "Oxide Virtual Turin-like Processor" || set.Config["goos"] != "linux" {
		t.Errorf("config %v", set.Config)
	}
}

func TestParseNoProcsSuffix(t *testing.T) {
	set := parse(t, "BenchmarkRawHPKEPathSecret \t 4364\t 151910 ns/op\nBenchmarkX/body=256-16 1 2 ns/op\n")
	if len(set.Results) != 2 {
		t.Fatalf("%d results", len(set.Results))
	}
	if r := set.Results[0]; r.Name != "BenchmarkRawHPKEPathSecret" || r.Procs != 1 {
		t.Errorf("%+v", r)
	}
	if r := set.Results[1]; r.Name != "BenchmarkX/body=256" || r.Procs != 16 {
		t.Errorf("%+v", r)
	}
}

func TestParseMalformed(t *testing.T) {
	if _, err := Parse(strings.NewReader("BenchmarkX-2 3 12 ns/op 4\n")); err == nil {
		t.Error("a value without a unit was accepted")
	}
}

func TestBuildMedians(t *testing.T) {
	set := parse(t, realOutput)
	f, err := Build(set, PlotSpec{File: "e2e.svg", Match: "^BenchmarkE2EGroupSweep/", X: "members", Metric: "msgs/s",
		Labels: map[string]string{"BenchmarkE2EGroupSweep/memsec=false": "OFF", "BenchmarkE2EGroupSweep/memsec=true": "ON", "BenchmarkOther/x": "absent"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Series) != 2 || f.Series[0].Label != "OFF" || f.Series[1].Label != "ON" {
		t.Fatalf("series %+v", f.Series)
	}
	p := f.Series[0].Points[0]
	if p.X != 2 || p.Y != 170.2 || p.Lo != 163.9 || p.Hi != 178.0 || p.Runs != 3 {
		t.Errorf("members=2 OFF: %+v", p)
	}
	if p := f.Series[0].Points[1]; p.X != 100 || p.Y != 2.45 || p.Runs != 1 {
		t.Errorf("members=100 OFF: %+v", p)
	}
	if !f.XLog || !f.YLog {
		t.Errorf("scales: x log %v, y log %v; both span decades", f.XLog, f.YLog)
	}
	if !strings.Contains(f.Note, "medians of 1 to 3 runs") || !strings.Contains(f.Note, "Oxide") {
		t.Errorf("note %q", f.Note)
	}
}

func TestBuildTimeAndRef(t *testing.T) {
	set := parse(t, `BenchmarkC/members=2/commit-2 10 400000 ns/op
BenchmarkC/members=100/commit-2 10 16000000 ns/op
BenchmarkC/members=100/commit-2 10 18000000 ns/op
BenchmarkRaw-2 100 100000 ns/op
BenchmarkRaw-2 100 120000 ns/op
BenchmarkRaw-2 100 110000 ns/op
`)
	f, err := Build(set, PlotSpec{File: "c.svg", Match: "^BenchmarkC/", X: "members", Metric: "ns/op",
		Refs: []RefSpec{{Label: "raw", Match: "^BenchmarkRaw$", Metric: "ns/op", PerX: true, XOffset: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	if f.YKind != "time" || len(f.Series) != 2 {
		t.Fatalf("kind %q, %d series", f.YKind, len(f.Series))
	}
	if p := f.Series[0].Points[1]; math.Abs(p.Y-0.017) > 1e-12 {
		t.Errorf("median of two in seconds: %v", p.Y)
	}
	ref := f.Series[1]
	if !ref.Ref || len(ref.Points) != 2 || math.Abs(ref.Points[0].Y-110e-6) > 1e-12 || math.Abs(ref.Points[1].Y-99*110e-6) > 1e-12 {
		t.Errorf("ref %+v", ref)
	}
}

func TestBuildRatio(t *testing.T) {
	set := parse(t, realOutput)
	f, err := Build(set, PlotSpec{File: "r.svg", Match: "^BenchmarkAppendInFlight/", X: "inflight", Metric: "ops/s", YZero: true,
		Ratios: []RatioSpec{{Label: "sealed / raw", Num: "BenchmarkAppendInFlight/sealed", Den: "BenchmarkAppendInFlight/raw"}}})
	if err != nil {
		t.Fatal(err)
	}
	if f.YKind != "ratio" || len(f.Series) != 1 || len(f.Series[0].Points) != 2 {
		t.Fatalf("%+v", f)
	}
	// inflight=1: runs paired in order, 9884/14184 and 9000/10000.
	p := f.Series[0].Points[0]
	want := (9884.0/14184 + 9000.0/10000) / 2
	if p.X != 1 || math.Abs(p.Y-want) > 1e-12 || p.Runs != 2 {
		t.Errorf("inflight=1: %+v, want y %v", p, want)
	}
	// inflight=1024: one raw run, so one pair.
	if p := f.Series[0].Points[1]; p.Runs != 1 || math.Abs(p.Y-46053.0/75897) > 1e-12 {
		t.Errorf("inflight=1024: %+v", p)
	}
	if _, err := Build(set, PlotSpec{File: "r.svg", Match: "^BenchmarkAppendInFlight/", X: "inflight", Metric: "ops/s",
		Ratios: []RatioSpec{{Label: "x", Num: "BenchmarkAppendInFlight/nope", Den: "BenchmarkAppendInFlight/raw"}}}); err == nil {
		t.Error("a ratio of a missing series was accepted")
	}
}

func TestBuildNoMatch(t *testing.T) {
	set := parse(t, realOutput)
	if _, err := Build(set, PlotSpec{File: "x.svg", Match: "^BenchmarkNothing", X: "n", Metric: "ns/op"}); err == nil {
		t.Error("a plot of nothing was built")
	}
}

// svgCounts parses an SVG with encoding/xml (failing on malformed XML)
// and counts the point markers and range bars of each series.
func svgCounts(t *testing.T, b []byte) (points, ranges map[string]int, order []string) {
	t.Helper()
	points, ranges = map[string]int{}, map[string]int{}
	dec := xml.NewDecoder(bytes.NewReader(b))
	var series string
	depth, seriesDepth := 0, -1
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("malformed SVG: %v\n%s", err, b)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			depth++
			if root == "" {
				root = el.Name.Local
				if el.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace %q", el.Name.Space)
				}
			}
			attr := map[string]string{}
			for _, a := range el.Attr {
				attr[a.Name.Local] = a.Value
			}
			switch attr["class"] {
			case "series":
				series, seriesDepth = attr["data-label"], depth
				order = append(order, series)
			case "point":
				points[series]++
			case "range":
				ranges[series]++
			}
		case xml.EndElement:
			if depth == seriesDepth {
				series, seriesDepth = "", -1
			}
			depth--
		}
	}
	if root != "svg" {
		t.Errorf("root element %q", root)
	}
	return points, ranges, order
}

func TestWriteSVG(t *testing.T) {
	set := parse(t, realOutput)
	f, err := Build(set, PlotSpec{File: "e2e.svg", Title: `Rate <by> "size" & more`, XLabel: "members", YLabel: "msgs/s",
		Match: "^BenchmarkE2EGroupSweep/", X: "members", Metric: "msgs/s",
		Order:  []string{"BenchmarkE2EGroupSweep/memsec=true"},
		Labels: map[string]string{"BenchmarkE2EGroupSweep/memsec=false": "OFF & away", "BenchmarkE2EGroupSweep/memsec=true": "ON"}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	points, ranges, order := svgCounts(t, buf.Bytes())
	if len(order) != 2 || order[0] != "ON" || order[1] != "OFF & away" {
		t.Errorf("series %q, want ON then OFF & away", order)
	}
	if points["OFF & away"] != 2 || points["ON"] != 2 {
		t.Errorf("points %v, want 2 per series", points)
	}
	// Only OFF at members=2 has several runs that differ.
	if ranges["OFF & away"] != 1 || ranges["ON"] != 0 {
		t.Errorf("range bars %v", ranges)
	}
	// Legend markers are points too, outside the series groups.
	if points[""] != 2 {
		t.Errorf("%d legend markers, want 2", points[""])
	}
	if !bytes.Contains(buf.Bytes(), []byte("Rate &lt;by&gt; &#34;size&#34; &amp; more")) {
		t.Error("title not escaped")
	}
}

func TestWriteSVGRatioAndRef(t *testing.T) {
	set := parse(t, realOutput+`BenchmarkRef-2 1 100 ops/s
`)
	f, err := Build(set, PlotSpec{File: "r.svg", Match: "^BenchmarkAppendInFlight/", X: "inflight", Metric: "ops/s", YZero: true, YLog: "linear",
		Ratios: []RatioSpec{{Label: "sealed / raw", Num: "BenchmarkAppendInFlight/sealed", Den: "BenchmarkAppendInFlight/raw"}},
		Refs:   []RefSpec{{Label: "flat", Match: "^BenchmarkRef$", Metric: "ops/s"}, {Label: "target", Value: 0.9}}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	points, _, order := svgCounts(t, buf.Bytes())
	if len(order) != 3 || points["sealed / raw"] != 2 || points["flat"] != 0 || points["target"] != 0 {
		t.Errorf("series %q, points %v: want the ratio's 2 points and two reference lines without markers", order, points)
	}
	if tgt := f.Series[2]; len(tgt.Points) != 2 || tgt.Points[0].Y != 0.9 || tgt.Points[1].Y != 0.9 {
		t.Errorf("target line %+v", tgt)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`stroke-dasharray`)) {
		t.Error("reference line not dashed")
	}
}

func TestTicks(t *testing.T) {
	a := newAxis([]float64{2, 100}, true, false, "")
	var labels []string
	for _, tk := range a.ticks {
		if tk.label != "" {
			labels = append(labels, tk.label)
		}
	}
	if got := strings.Join(labels, " "); got != "2 5 10 20 50 100" {
		t.Errorf("log ticks over 2..100: %q", got)
	}
	a = newAxis([]float64{1e-3, 1}, true, false, "time")
	labels = nil
	for _, tk := range a.ticks {
		if tk.label != "" {
			labels = append(labels, tk.label)
		}
	}
	if got := strings.Join(labels, " "); got != "1 ms 2 ms 5 ms 10 ms 20 ms 50 ms 100 ms 200 ms 500 ms 1 s" {
		t.Errorf("log time ticks over 1 ms..1 s: %q", got)
	}
	a = newAxis([]float64{1e2, 1e6}, true, false, "")
	labels = nil
	for _, tk := range a.ticks {
		if tk.label != "" {
			labels = append(labels, tk.label)
		}
	}
	if got := strings.Join(labels, " "); got != "100 1k 10k 100k 1M" {
		t.Errorf("log ticks over 4 decades (with the margins): %q", got)
	}
	a = newAxis([]float64{0.47, 0.9}, false, true, "ratio")
	labels = nil
	for _, tk := range a.ticks {
		labels = append(labels, tk.label)
	}
	if got := strings.Join(labels, " "); got != "0.0 0.2 0.4 0.6 0.8 1.0" {
		t.Errorf("linear ratio ticks from zero: %q", got)
	}
	for v, want := range map[float64]string{0.0004: "400 µs", 0.0155: "15.5 ms", 1.1: "1.1 s", 2e-8: "20 ns"} {
		if got := formatValue(v, "time", -1); got != want {
			t.Errorf("time %v: %q, want %q", v, got, want)
		}
	}
	for v, want := range map[float64]string{1024: "1024", 10000: "10k", 300000: "300k", 2.5: "2.5", 64: "64"} {
		if got := formatExact(v, ""); got != want {
			t.Errorf("exact %v: %q, want %q", v, got, want)
		}
	}
	for v, want := range map[float64]string{300000: "300k", 1e6: "1M", 2.5: "2.5", 44000: "44k", 1500: "1.5k"} {
		if got := formatValue(v, "", -1); got != want {
			t.Errorf("SI %v: %q, want %q", v, got, want)
		}
	}
}

func TestReadSpec(t *testing.T) {
	if _, err := ReadSpec(strings.NewReader(`{"plots":[{"file":"a.svg","match":"x","x":"n","metric":"ns/op","bogus":1}]}`)); err == nil {
		t.Error("unknown field accepted")
	}
	if _, err := ReadSpec(strings.NewReader(`{"plots":[{"file":"a.svg","match":"x","metric":"ns/op"}]}`)); err == nil {
		t.Error("plot without x accepted")
	}
	s, err := ReadSpec(strings.NewReader(`{"plots":[{"file":"a.svg","match":"x","x":"n","metric":"ns/op","xScale":"log"}]}`))
	if err != nil || len(s.Plots) != 1 || s.Plots[0].XLog != "log" {
		t.Errorf("%+v %v", s, err)
	}
}
