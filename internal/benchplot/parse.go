// Package benchplot turns `go test -bench` output into SVG line plots: the
// scaling curves of docs/benchmarks.md (docs/plots/, `make plots`).
//
// Parse reads the standard benchmark text format, custom b.ReportMetric
// units included; Build groups the results of one plot into series by the
// sub-benchmark parameter on the x axis (for example members=100), taking
// the median over -count repeats; Figure.WriteSVG draws them with the
// standard library only. The command is ./internal/benchplot/cmd/benchplot.
package benchplot

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Result is one benchmark result line: one run of one benchmark.
type Result struct {
	// Name is the full benchmark name without the GOMAXPROCS suffix, for
	// example "BenchmarkCommitWithPath/members=100/commit".
	Name string
	// Procs is the GOMAXPROCS suffix of the name (1 when absent).
	Procs int
	// Iterations is b.N.
	Iterations int64
	// Values maps each unit ("ns/op", "B/op", "msgs/s", ...) to its value.
	Values map[string]float64
	// Pkg is the import path of the package the line came from ("pkg:"
	// header), or "" if none preceded it.
	Pkg string
	// Line is the line number in the input, from 1.
	Line int
}

// Set is everything Parse read: the results in input order and the
// "key: value" configuration lines (goos, goarch, pkg, cpu), the last
// value of each.
type Set struct {
	Results []Result
	Config  map[string]string
}

// procsSuffix is the "-N" GOMAXPROCS suffix go test appends to names.
var procsSuffix = regexp.MustCompile(`-(\d+)$`)

// configLine is a "key: value" header line of the benchmark format.
var configLine = regexp.MustCompile(`^([a-z][a-zA-Z0-9_-]*):\s*(.*)$`)

// Parse reads go test -bench output. Lines that are not benchmark results
// or configuration (PASS, ok, logs) are skipped. A result whose name and
// figures were split by output written in between (the name line ending
// in something that is not a figure, the figures arriving on a later line
// of their own) is joined back together.
func Parse(r io.Reader) (*Set, error) {
	s := &Set{Config: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var pending string // a name whose figures have not arrived yet
	pkg := ""
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if m := configLine.FindStringSubmatch(line); m != nil && !strings.HasPrefix(line, "Benchmark") {
			s.Config[m[1]] = m[2]
			if m[1] == "pkg" {
				pkg = m[2]
			}
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if strings.HasPrefix(fields[0], "Benchmark") {
			res, ok, err := parseFigures(fields[0], fields[1:])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if !ok {
				pending = fields[0]
				continue
			}
			pending = ""
			res.Pkg, res.Line = pkg, n
			s.Results = append(s.Results, res)
			continue
		}
		if pending != "" {
			// The figures of a split line: "  3  123 ns/op ...".
			if res, ok, err := parseFigures(pending, fields); err == nil && ok {
				res.Pkg, res.Line = pkg, n
				s.Results = append(s.Results, res)
				pending = ""
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// parseFigures parses "N v unit v unit ..." after a benchmark name. It
// reports ok false when the fields are not figures at all (a name line
// followed by a log), and an error when they start as figures but are
// malformed.
func parseFigures(name string, fields []string) (Result, bool, error) {
	if len(fields) < 3 {
		return Result{}, false, nil
	}
	iters, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return Result{}, false, nil
	}
	if _, err := strconv.ParseFloat(fields[1], 64); err != nil {
		return Result{}, false, nil
	}
	if len(fields)%2 != 1 {
		return Result{}, false, fmt.Errorf("%s: odd number of value/unit fields", name)
	}
	res := Result{Name: name, Procs: 1, Iterations: iters, Values: map[string]float64{}}
	if m := procsSuffix.FindStringSubmatch(name); m != nil {
		res.Name = strings.TrimSuffix(name, m[0])
		res.Procs, _ = strconv.Atoi(m[1])
	}
	for i := 1; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return Result{}, false, fmt.Errorf("%s: value %q: %w", name, fields[i], err)
		}
		res.Values[fields[i+1]] = v
	}
	return res, true, nil
}

// Param returns the value of the name's key=value element key (for
// "BenchmarkX/members=100/commit", Param("members") is "100").
func (r Result) Param(key string) (string, bool) {
	for _, part := range strings.Split(r.Name, "/")[1:] {
		if k, v, ok := strings.Cut(part, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// seriesKey is the name without the element of parameter x: what tells
// the series of one plot apart ("BenchmarkX/memsec=false/members=10" with
// x "members" is "BenchmarkX/memsec=false").
func (r Result) seriesKey(x string) string {
	parts := strings.Split(r.Name, "/")
	keep := parts[:1]
	for _, p := range parts[1:] {
		if k, _, ok := strings.Cut(p, "="); ok && k == x {
			continue
		}
		keep = append(keep, p)
	}
	return strings.Join(keep, "/")
}
