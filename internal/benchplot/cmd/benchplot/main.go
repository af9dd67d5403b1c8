// Command benchplot draws the SVG plots described by a spec file from
// `go test -bench` output:
//
//	go run ./internal/benchplot/cmd/benchplot -spec docs/plots/plots.json \
//	    -out docs/plots docs/plots/bench.txt
//
// It reads the benchmark output from the files named (standard input if
// none), writes one SVG per plot of the spec into -out, and names each
// file it wrote. `make plots` runs the benchmarks and then this.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/epochlog/epochlog/internal/benchplot"
)

func main() {
	spec := flag.String("spec", "docs/plots/plots.json", "the plots to draw (JSON)")
	out := flag.String("out", "docs/plots", "directory to write the SVG files into")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: benchplot [-spec file] [-out dir] [bench-output ...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*spec, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(specPath, out string, inputs []string) error {
	sf, err := os.Open(specPath)
	if err != nil {
		return err
	}
	spec, err := benchplot.ReadSpec(sf)
	sf.Close()
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if len(inputs) > 0 {
		var all bytes.Buffer
		for _, name := range inputs {
			b, err := os.ReadFile(name)
			if err != nil {
				return err
			}
			all.Write(b)
			all.WriteByte('\n')
		}
		in = &all
	}
	set, err := benchplot.Parse(in)
	if err != nil {
		return err
	}
	if len(set.Results) == 0 {
		return fmt.Errorf("no benchmark results in the input")
	}
	for _, p := range spec.Plots {
		fig, err := benchplot.Build(set, p)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := fig.WriteSVG(&buf); err != nil {
			return err
		}
		path := filepath.Join(out, p.File)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path)
	}
	return nil
}
