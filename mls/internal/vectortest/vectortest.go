// Package vectortest locates and loads the official MLS test vectors and
// keeps the per-file tally (cases, passed, skipped per cipher suite) that
// every vector test prints.
package vectortest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// EnvDir names the environment variable that overrides the vectors
// directory.
const EnvDir = "EPOCHLOG_MLS_VECTORS"

// Dir returns the directory holding the MLS test vector JSON files:
// $EPOCHLOG_MLS_VECTORS if set, else ../shared/mls-test-vectors beside the
// module root (the nearest parent directory of the working directory that
// holds go.mod). If neither exists the test fails, naming where it looked:
// a run without the conformance tests must not look green. Setting
// $EPOCHLOG_MLS_VECTORS=skip skips them instead, on purpose.
func Dir(t testing.TB) string {
	t.Helper()
	d := os.Getenv(EnvDir)
	if d == SkipValue {
		t.Skipf("MLS CONFORMANCE NOT TESTED: $%s=%s skips every official test vector", EnvDir, SkipValue)
	}
	if d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
		missing(t, fmt.Sprintf("$%s=%q is not a directory", EnvDir, d))
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("MLS test vectors: working directory: %v", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(dir, "..", "shared", "mls-test-vectors")
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				return filepath.Clean(d)
			}
			missing(t, fmt.Sprintf("not found in %s (module root %s) and $%s is unset", filepath.Clean(d), dir, EnvDir))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			missing(t, fmt.Sprintf("no go.mod above %s and $%s is unset", wd, EnvDir))
		}
		dir = parent
	}
}

// SkipValue, as $EPOCHLOG_MLS_VECTORS, skips the vector tests on purpose.
const SkipValue = "skip"

// missing fails the test: the vectors are not where they should be.
func missing(t testing.TB, where string) {
	t.Helper()
	t.Fatalf("MLS CONFORMANCE NOT TESTED: the official MLS test vectors are missing: %s. "+
		"Put them at ../shared/mls-test-vectors beside the module, set $%s to their directory, "+
		"or set $%s=%s to skip the conformance tests knowingly", where, EnvDir, EnvDir, SkipValue)
}

// Load decodes the vector file name (e.g. "tree-math.json") from [Dir] into
// v, typically a pointer to a slice of structs. Unknown JSON fields are
// rejected so that a struct that misses a field the vectors carry is noticed.
func Load(t testing.TB, name string, v any) {
	t.Helper()
	path := filepath.Join(Dir(t), name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("MLS test vectors: %v", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("MLS test vectors: decoding %s: %v", path, err)
	}
}

// HexBytes is a byte string that unmarshals from a hex JSON string; use it
// for the vectors' hex-encoded fields.
type HexBytes []byte

// UnmarshalJSON decodes a JSON string of hex digits.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("hex field: %w", err)
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("hex field: %w", err)
	}
	*h = d
	return nil
}

// Hex decodes s or fails the test.
func Hex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test vector: %v", err)
	}
	return b
}

// Equal fails the test (without stopping it) if got differs from want,
// showing both in hex. It is for public vector values only: test vectors are
// published data, not secrets.
func Equal(t testing.TB, what string, got, want []byte) bool {
	t.Helper()
	if string(got) != string(want) {
		t.Errorf("%s:\n got  %x\n want %x", what, got, want)
		return false
	}
	return true
}

type row struct{ cases, passed, skipped, failed int }

// Tally counts the cases of one vector file per cipher suite and prints
// them as a table when the test ends. The test fails if the file had no
// cases, or if any case that was run did not pass; a case of a suite
// outside the RFC 9420 registry is recorded with [Tally.Skip] and counted.
// A Tally is safe for use by parallel subtests.
type Tally struct {
	file    string
	mu      sync.Mutex
	rows    map[uint16]*row
	reasons map[uint16]string
}

// NewTally returns a Tally for file whose table is logged, and whose
// completeness is checked, in t's cleanup.
func NewTally(t *testing.T, file string) *Tally {
	ta := &Tally{file: file, rows: map[uint16]*row{}, reasons: map[uint16]string{}}
	t.Cleanup(func() { ta.report(t) })
	return ta
}

func (ta *Tally) row(suite uint16) *row {
	r := ta.rows[suite]
	if r == nil {
		r = &row{}
		ta.rows[suite] = r
	}
	return r
}

// Run runs fn as subtest name for a case of suite (0 for files without
// suites) and records whether it passed. A case that calls t.Skip counts as
// failed: every case of a supported suite must pass.
func (ta *Tally) Run(t *testing.T, name string, suite uint16, fn func(t *testing.T)) bool {
	t.Helper()
	skipped := false
	ok := t.Run(name, func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		fn(t)
	})
	ta.mu.Lock()
	defer ta.mu.Unlock()
	r := ta.row(suite)
	r.cases++
	switch {
	case skipped:
		r.failed++
		t.Errorf("%s: case %s of supported suite %d skipped; it must pass", ta.file, name, suite)
		return false
	case ok:
		r.passed++
	default:
		r.failed++
	}
	return ok
}

// registered reports whether suite is one of the cipher suites registered by
// RFC 9420 §17.1 (1 to 7), all of which mls/ciphersuite implements.
func registered(suite uint16) bool { return suite >= 1 && suite <= 7 }

// Skip records a case of an unsupported suite as skipped, with reason, and
// shows it as a skipped subtest. Every registered suite is implemented, so a
// case of one must run: skipping it is recorded as a failure instead, which
// keeps a regression in cipher suite support from passing as a skip.
func (ta *Tally) Skip(t *testing.T, name string, suite uint16, reason string) {
	t.Helper()
	if registered(suite) {
		ta.mu.Lock()
		r := ta.row(suite)
		r.cases++
		r.failed++
		ta.mu.Unlock()
		t.Errorf("%s: case %s of registered suite %d skipped (%s); it must run and pass", ta.file, name, suite, reason)
		return
	}
	ta.mu.Lock()
	r := ta.row(suite)
	r.cases++
	r.skipped++
	ta.reasons[suite] = reason
	ta.mu.Unlock()
	t.Run(name, func(t *testing.T) { t.Skipf("suite %d: %s", suite, reason) })
}

// Counts returns the totals across suites: cases, passed, skipped, failed.
func (ta *Tally) Counts() (cases, passed, skipped, failed int) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	for _, r := range ta.rows {
		cases += r.cases
		passed += r.passed
		skipped += r.skipped
		failed += r.failed
	}
	return
}

// Table renders the tally as a small text table, one row per suite.
func (ta *Tally) Table() string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	suites := make([]uint16, 0, len(ta.rows))
	for s := range ta.rows {
		suites = append(suites, s)
	}
	slices.Sort(suites)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%-6s %6s %6s %7s %6s\n", ta.file, "suite", "cases", "passed", "skipped", "failed")
	var tot row
	for _, s := range suites {
		r := ta.rows[s]
		name := fmt.Sprint(s)
		if s == 0 {
			name = "-"
		}
		fmt.Fprintf(&b, "%-6s %6d %6d %7d %6d", name, r.cases, r.passed, r.skipped, r.failed)
		if reason, ok := ta.reasons[s]; ok {
			fmt.Fprintf(&b, "  (skipped: %s)", reason)
		}
		b.WriteByte('\n')
		tot.cases += r.cases
		tot.passed += r.passed
		tot.skipped += r.skipped
		tot.failed += r.failed
	}
	fmt.Fprintf(&b, "%-6s %6d %6d %7d %6d\n", "total", tot.cases, tot.passed, tot.skipped, tot.failed)
	return b.String()
}

func (ta *Tally) report(t *testing.T) {
	if t.Skipped() {
		return
	}
	t.Log("\n" + ta.Table())
	cases, passed, skipped, _ := ta.Counts()
	if cases == 0 {
		t.Errorf("%s: no cases were run", ta.file)
	}
	if passed+skipped != cases {
		t.Errorf("%s: %d of %d cases neither passed nor were skipped as unsupported", ta.file, cases-passed-skipped, cases)
	}
}
