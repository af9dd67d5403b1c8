// Package telemetrytest reads what the library recorded, for tests: one
// series' value of a telemetry.Metrics, and the records a JSON slog
// handler wrote.
package telemetrytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Value returns the value of the series name{labels...} collected from c
// (labels: name, value, name, value...; every label of the series must be
// given): a counter's or gauge's value, a histogram's sample count. A
// series that does not exist (yet) is 0.
func Value(t testing.TB, c prometheus.Collector, name string, labels ...string) float64 {
	t.Helper()
	v, _ := Lookup(t, c, name, labels...)
	return v
}

// Lookup is Value that also says whether the series exists.
func Lookup(t testing.TB, c prometheus.Collector, name string, labels ...string) (float64, bool) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("telemetrytest: labels of %s: %v is not name/value pairs", name, labels)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("telemetrytest: register: %v", err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("telemetrytest: gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !sameLabels(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func sameLabels(have []*dto.LabelPair, want []string) bool {
	if len(have) != len(want)/2 {
		return false
	}
	for i := 0; i < len(want); i += 2 {
		found := false
		for _, lp := range have {
			if lp.GetName() == want[i] && lp.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Logs is a goroutine-safe buffer of JSON log lines (nats.go calls the
// connection handlers on its own goroutine, also after Close returned).
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Logs) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Logs) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a logger writing JSON records at Debug and above to b.
func (b *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Record is one decoded log record.
type Record map[string]any

// Level is the record's level ("DEBUG", "INFO", "WARN", "ERROR").
func (r Record) Level() string { s, _ := r[slog.LevelKey].(string); return s }

// Msg is the record's message.
func (r Record) Msg() string { s, _ := r[slog.MessageKey].(string); return s }

// Str is the record's attribute key as text ("" when missing).
func (r Record) Str(key string) string {
	v, ok := r[key]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// Records decodes every record written so far; a line that is not a JSON
// object fails the test.
func (b *Logs) Records(t testing.TB) []Record {
	t.Helper()
	var out []Record
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("telemetrytest: log line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// Find returns the records at level whose message contains msg.
func (b *Logs) Find(t testing.TB, level, msg string) []Record {
	t.Helper()
	var out []Record
	for _, r := range b.Records(t) {
		if r.Level() == level && strings.Contains(r.Msg(), msg) {
			out = append(out, r)
		}
	}
	return out
}

var _ io.Writer = (*Logs)(nil)
