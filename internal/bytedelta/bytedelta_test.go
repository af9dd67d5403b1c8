package bytedelta

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// mutate returns a copy of b with a few runs replaced, inserted and
// deleted, as a commit changes a state.
func mutate(r *rand.Rand, b []byte) []byte {
	out := bytes.Clone(b)
	for range 1 + r.IntN(12) {
		at := 0
		if len(out) > 0 {
			at = r.IntN(len(out))
		}
		run := make([]byte, r.IntN(200))
		for i := range run {
			run[i] = byte(r.Uint32())
		}
		switch r.IntN(3) {
		case 0: // replace in place
			copy(out[at:], run)
		case 1: // insert
			out = append(out[:at], append(run, out[at:]...)...)
		default: // delete
			out = append(out[:at], out[min(len(out), at+len(run)):]...)
		}
	}
	return out
}

func random(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestDiffApplyRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	big := random(r, 180_000)
	cases := map[string][2][]byte{
		"empty both":           {nil, nil},
		"empty base":           {nil, random(r, 100)},
		"empty target":         {random(r, 100), nil},
		"identical":            {big, bytes.Clone(big)},
		"unrelated":            {random(r, 5000), random(r, 5000)},
		"shorter than a block": {[]byte("abc"), []byte("abd")},
		"repeated base":        {bytes.Repeat([]byte{7}, 4096), bytes.Repeat([]byte{7}, 9000)},
	}
	for name, c := range cases {
		d := Diff(c[0], c[1])
		got, err := Apply(c[0], d)
		if err != nil || !bytes.Equal(got, c[1]) {
			t.Errorf("%s: Apply(Diff) = %d bytes, %v; want the %d-byte target", name, len(got), err, len(c[1]))
		}
	}
	for i := range 200 {
		base := big[:r.IntN(len(big))]
		target := mutate(r, base)
		d := Diff(base, target)
		got, err := Apply(base, d)
		if err != nil || !bytes.Equal(got, target) {
			t.Fatalf("mutation %d: Apply(Diff) = %d bytes, %v; want the %d-byte target", i, len(got), err, len(target))
		}
	}
}

// TestDiffIsSmallForFewChanges is what the package is for: a target that
// differs from its base in a few places is a delta of about those places.
func TestDiffIsSmallForFewChanges(t *testing.T) {
	base, target := benchPair() // a dozen 64-byte changes, one shift
	d := Diff(base, target)
	if len(d) > 3000 {
		t.Fatalf("delta of %d bytes for about 800 changed bytes of %d", len(d), len(target))
	}
}

func TestApplyRefusesMalformed(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	base := random(r, 10_000)
	target := mutate(r, base)
	d := Diff(base, target)
	for cut := 0; cut < len(d); cut++ {
		if got, err := Apply(base, d[:cut]); err == nil && !bytes.Equal(got, target) {
			t.Fatalf("a delta cut at byte %d applied to %d wrong bytes", cut, len(got))
		} else if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("cut at %d: %v, want ErrMalformed", cut, err)
		}
	}
	if _, err := Apply(base[:100], d); !errors.Is(err, ErrMalformed) {
		t.Errorf("a delta applied to a shorter base: %v, want ErrMalformed", err)
	}
	for name, bad := range map[string][]byte{
		"no format":       {},
		"other format":    {2, 0},
		"long target":     {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"zero-length run": {1, 4, 1},
		"run past target": {1, 2, 7, 'a', 'b', 'c'},
		"copy past base":  {1, 4, 8, 0xff, 0xff, 0x03},
		"short of target": {1, 9, 3, 'a'},
	} {
		if _, err := Apply(base, bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzApply(f *testing.F) {
	base := bytes.Repeat([]byte("epochlog"), 100)
	f.Add(base, Diff(base, append(bytes.Clone(base), "tail"...)))
	f.Add([]byte{}, []byte{1, 0})
	f.Fuzz(func(t *testing.T, base, delta []byte) {
		got, err := Apply(base, delta)
		if err == nil && delta[0] != format {
			t.Fatalf("applied a delta of format %d", delta[0])
		}
		_ = got
	})
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte("the state before the commit, with its tree"), []byte("the state after the commit, with its tree"))
	f.Fuzz(func(t *testing.T, base, target []byte) {
		got, err := Apply(base, Diff(base, target))
		if err != nil || !bytes.Equal(got, target) {
			t.Fatalf("Apply(Diff) = %q, %v; want %q", got, err, target)
		}
	})
}

// Diff extends a match a word at a time; its output is defined byte by
// byte (TestDiffOutputIsStable), so the word loops must find exactly the
// runs a byte loop finds, whatever the lengths and wherever the first
// difference falls.
func FuzzCommonRuns(f *testing.F) {
	f.Add([]byte("0123456789abcdefXY"), []byte("0123456789abcdefXZ"))
	f.Add([]byte("a"), []byte(""))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		n := min(len(a), len(b))
		p := 0
		for p < n && a[p] == b[p] {
			p++
		}
		s := 0
		for s < n && a[len(a)-1-s] == b[len(b)-1-s] {
			s++
		}
		if got := commonPrefix(a, b); got != p {
			t.Fatalf("commonPrefix = %d, want %d", got, p)
		}
		if got := commonSuffix(a, b); got != s {
			t.Fatalf("commonSuffix = %d, want %d", got, s)
		}
	})
}

func TestCommonRunsAtEveryOffset(t *testing.T) {
	a := bytes.Repeat([]byte{7}, 40)
	for at := range 40 {
		b := bytes.Clone(a)
		b[at] = 8
		if got := commonPrefix(a, b); got != at {
			t.Fatalf("difference at %d: commonPrefix = %d", at, got)
		}
		if got, want := commonSuffix(a, b), 39-at; got != want {
			t.Fatalf("difference at %d: commonSuffix = %d, want %d", at, got, want)
		}
		if got, want := commonPrefix(a[:at], b[:at]), at; got != want {
			t.Fatalf("equal slices of %d: commonPrefix = %d", at, got)
		}
		if got, want := commonSuffix(a[at+1:], b[at+1:]), 39-at; got != want {
			t.Fatalf("equal slices of %d: commonSuffix = %d", want, got)
		}
	}
}

// BenchmarkDiff and BenchmarkApply time a 180,000-byte target (the size
// of a group's state at 1,000 members) that differs from its base in a
// dozen 64-byte runs and one 40-byte insertion, as a commit changes a
// state: docs/benchmarks.md, "A commit's state as a delta".
func BenchmarkDiff(b *testing.B) {
	base, target := benchPair()
	b.SetBytes(int64(len(target)))
	for b.Loop() {
		Diff(base, target)
	}
}

func BenchmarkApply(b *testing.B) {
	base, target := benchPair()
	d := Diff(base, target)
	b.SetBytes(int64(len(target)))
	for b.Loop() {
		if _, err := Apply(base, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(d)), "delta-bytes")
}

func benchPair() (base, target []byte) {
	r := rand.New(rand.NewPCG(3, 4))
	base = random(r, 180_000)
	target = bytes.Clone(base)
	for i := range 12 {
		copy(target[i*15_000:], random(r, 64))
	}
	return base, append(target[:100_000], append(random(r, 40), target[100_000:]...)...)
}

// Diff's output is part of the read model's format (see the package
// doc): the same inputs give the same bytes as when this test was
// written. A deliberate change of the algorithm changes want here and
// needs a read-model schema version.
func TestDiffOutputIsStable(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	base := make([]byte, 64<<10)
	for i := range base {
		base[i] = byte(r.Uint32())
	}
	target := slices.Clone(base)
	for i := 0; i < 12; i++ { // replacements, an insertion, a deletion
		at := r.IntN(len(target) - 64)
		for j := range 40 {
			target[at+j] ^= byte(r.Uint32()) | 1
		}
	}
	target = slices.Insert(target, 1000, []byte("inserted run")...)
	target = slices.Delete(target, 30000, 30100)
	d := Diff(base, target)
	sum := sha256.Sum256(d)
	const want, wantLen = "7fa813afe4f650392852954e740ebe3627397596b6bff3acfcccefd0d828335c", 579
	if got := hex.EncodeToString(sum[:]); got != want || len(d) != wantLen {
		t.Fatalf("Diff's output changed: %d bytes, SHA-256 %s, want %d bytes, %s", len(d), got, wantLen, want)
	}
	if got, err := Apply(base, d); err != nil || !bytes.Equal(got, target) {
		t.Fatalf("Apply: %v", err)
	}
}
