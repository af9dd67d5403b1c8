package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDemoReportsItsSeed: a demo run without --seed draws one and says
// which, on its header line and in --json, so that --seed repeats the
// run's random choices (its groups' members, who sends what) after a run
// that went wrong. Until 2026-12-06 the drawn seed was never shown.
func TestDemoReportsItsSeed(t *testing.T) {
	noEnv := func(out, errb *bytes.Buffer) *cliEnv {
		return &cliEnv{stdout: out, stderr: errb, getenv: func(string) string { return "" }}
	}
	type summary struct {
		Seed   uint64 `json:"seed"`
		Groups []struct {
			Members int    `json:"members"`
			Epoch   uint64 `json:"epoch"`
		} `json:"groups"`
		Activity map[string]int `json:"activity"`
	}
	demo := func(extra ...string) (summary, string) {
		t.Helper()
		args := append([]string{"demo", "--data", filepath.Join(t.TempDir(), "data"), "--installations", "6", "--groups", "2", "--messages", "12"}, extra...)
		var out, errb bytes.Buffer
		if code := run(context.Background(), noEnv(&out, &errb), args); code != exitOK {
			t.Fatalf("%v: exit %d; stderr:\n%s", args, code, errb.String())
		}
		if !slices.Contains(extra, "--json") {
			return summary{}, out.String()
		}
		var s summary
		if err := json.Unmarshal(out.Bytes(), &s); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		return s, out.String()
	}
	first, _ := demo("--json")
	if first.Seed == 0 {
		t.Fatal("demo --json without --seed reports no seed")
	}
	again, _ := demo("--json", "--seed", strconv.FormatUint(first.Seed, 10))
	if again.Seed != first.Seed {
		t.Fatalf("demo --seed %d reports seed %d", first.Seed, again.Seed)
	}
	if !reflect.DeepEqual(first.Groups, again.Groups) || !reflect.DeepEqual(first.Activity, again.Activity) {
		t.Fatalf("the same seed gave other choices:\n%+v\n%+v", first, again)
	}
	_, text := demo("--seed", "42")
	header, _, _ := strings.Cut(text, "\n")
	if !strings.Contains(header, "(seed 42)") {
		t.Fatalf("header does not name the seed: %q", header)
	}
}
