package eventlog

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// An active-stream pointer whose value names a stream or subject prefix
// no Config could (a wildcard prefix would have a resolved Log read other
// subjects than its own) is refused where it is read, naming the bucket
// and key, and a Log that resolves through it does not open. So is one
// that does not decode.
func TestActivePointerIsChecked(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	cfg := testConfig(srv)
	l := openLog(t, cfg, ringOf(t, 1))
	kv, err := l.metaKV(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{
		`{"current":{"stream":"EPOCHLOG_R2","subject_prefix":"epochlog.>"}}`,
		`{"current":{"stream":"EPOCHLOG_R2","subject_prefix":"*"}}`,
		`{"current":{"stream":"EPOCHLOG_R2"}}`,
		`{"current":{"stream":"A.B","subject_prefix":"epochlog_r2"}}`,
		`{"current":{"stream":"","subject_prefix":"epochlog_r2"}}`,
		`{"current":{"stream":"EPOCHLOG_R2","subject_prefix":"epochlog_r2"},"previous":{"stream":"EPOCHLOG","subject_prefix":"a..b"}}`,
		`{"current":`,
	} {
		if _, err := kv.Put(ctx, "EPOCHLOG", []byte(v)); err != nil {
			t.Fatal(err)
		}
		if a, err := l.ActiveStream(ctx, "EPOCHLOG"); err == nil || !strings.Contains(err.Error(), MetaBucket) {
			t.Errorf("pointer %s: read as %+v, %v; want an error naming the bucket", v, a, err)
		}
		rcfg := cfg
		rcfg.ResolveActive, rcfg.ReadOnly = true, true
		if r, err := Open(ctx, rcfg, ringOf(t, 1)); err == nil {
			t.Errorf("pointer %s: a Log resolved it to stream %s", v, r.Stream())
			_ = r.Close()
		}
	}
	// A valid pointer still resolves.
	if _, err := kv.Put(ctx, "EPOCHLOG", []byte(`{"current":{"stream":"EPOCHLOG_R2","subject_prefix":"epochlog_r2"}}`)); err != nil {
		t.Fatal(err)
	}
	if a, err := l.ActiveStream(ctx, "EPOCHLOG"); err != nil || a.Current.Stream != "EPOCHLOG_R2" {
		t.Fatalf("a valid pointer: %+v, %v", a, err)
	}
}

// FuzzDecodeActive: whatever the metadata bucket holds, decodeActive
// never panics, and what it takes names streams and subject prefixes a
// Config could, and encodes and decodes to itself.
func FuzzDecodeActive(f *testing.F) {
	prev := StreamRef{Stream: "EPOCHLOG", SubjectPrefix: "epochlog"}
	for _, a := range []Active{
		{Current: StreamRef{Stream: "EPOCHLOG_R2", SubjectPrefix: "epochlog_r2"}, Previous: &prev, PreviousLastSeq: 40, CurrentStartSeq: 12, SwitchedAt: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)},
		{Current: StreamRef{Stream: "S", SubjectPrefix: "a.b"}},
	} {
		b, err := json.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"current":{"stream":"S","subject_prefix":"a.>"}}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		a, err := decodeActive(value)
		if err != nil {
			return
		}
		for _, r := range []*StreamRef{&a.Current, a.Previous} {
			if r == nil {
				continue
			}
			cfg := DefaultConfig("d")
			cfg.Stream, cfg.SubjectPrefix = r.Stream, r.SubjectPrefix
			if err := cfg.validate(); err != nil {
				t.Fatalf("took a pointer naming %+v, which no Config could: %v", *r, err)
			}
		}
		b, err := json.Marshal(a)
		if err != nil {
			return // a time json cannot write (a year past 9999)
		}
		back, err := decodeActive(b)
		if err != nil {
			t.Fatalf("%s does not read back: %v", b, err)
		}
		back.SwitchedAt, a.SwitchedAt = back.SwitchedAt.UTC(), a.SwitchedAt.UTC()
		if !reflect.DeepEqual(back, a) {
			t.Fatalf("%s reads back as %+v, want %+v", b, back, a)
		}
	})
}
