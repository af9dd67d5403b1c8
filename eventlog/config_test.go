package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	c, err := Config{DataDir: "/tmp/x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, DefaultConfig("/tmp/x")) {
		t.Fatalf("zero-value defaults differ from DefaultConfig:\n%+v\n%+v", c, DefaultConfig("/tmp/x"))
	}
	bad := map[string]Config{
		"no data dir":         {},
		"in-process remote":   {NATSURL: "nats://h:4222", EmbeddedInProcess: true},
		"no sync remote":      {NATSURL: "nats://h:4222", NoSync: true},
		"stream with dot":     {DataDir: "d", Stream: "A.B"},
		"prefix wildcard":     {DataDir: "d", SubjectPrefix: "a.*"},
		"prefix empty token":  {DataDir: "d", SubjectPrefix: "a..b"},
		"replicas":            {DataDir: "d", Replicas: 7},
		"negative replicas":   {DataDir: "d", Replicas: -1},
		"negative max age":    {DataDir: "d", MaxAge: -time.Hour},
		"negative max bytes":  {DataDir: "d", MaxBytes: -5},
		"short dup window":    {DataDir: "d", DuplicateWindow: time.Second},
		"max age < window":    {DataDir: "d", MaxAge: time.Minute},
		"cert without key":    {NATSURL: "nats://h", TLSCertFile: "c.pem"},
		"creds and nkey":      {NATSURL: "nats://h", CredsFile: "a", NKeySeedFile: "b"},
		"storage":             {DataDir: "d", Storage: Storage(9)},
		"embedded with CA":    {DataDir: "d", TLSCAFile: "ca.pem"},
		"embedded with cert":  {DataDir: "d", TLSCertFile: "c.pem", TLSKeyFile: "k.pem"},
		"embedded with creds": {DataDir: "d", CredsFile: "a.creds"},
		"embedded with nkey":  {DataDir: "d", NKeySeedFile: "a.nk"},
		"embedded with user":  {DataDir: "d", User: "u", Password: NewSecret("p")},
		"password, no user":   {NATSURL: "nats://h", Password: NewSecret("p")},
	}
	for name, cfg := range bad {
		if _, err := cfg.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := (Config{DataDir: "d", TLSCAFile: "ca.pem"}).withDefaults(); err == nil || !strings.Contains(err.Error(), "TLSCAFile") {
		t.Errorf("CA file with the embedded server: %v, want an error naming TLSCAFile", err)
	}
}

func TestSecretsRedacted(t *testing.T) {
	const pw = "hunter2-very-secret"
	cfg := Config{NATSURL: "nats://h", User: "u", Password: NewSecret(pw)}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%s", cfg.Password),
		fmt.Sprintf("%x", cfg.Password), fmt.Sprintf("%q", cfg.Password), cfg.Password.String(), string(js),
	} {
		if strings.Contains(s, pw) || strings.Contains(s, fmt.Sprintf("%x", pw)) {
			t.Fatalf("password printed: %s", s)
		}
	}
	for in, want := range map[string]string{
		"nats://u:pw@h:4222":               "nats://u:REDACTED@h:4222",
		"nats://tok@h:4222,nats://h2:4222": "nats://REDACTED@h:4222,nats://h2:4222",
		"h:4222":                           "h:4222",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
	// A failed connection does not echo the password from the URL.
	_, err = Open(context.Background(), Config{NATSURL: "nats://u:" + pw + "@127.0.0.1:1", RequestTimeout: time.Second}, keyring(t, 1, 1))
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("connect error: %v", err)
	}
}

func TestStreamCreateCheckUpdate(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	// Created with the configured settings.
	cfg := Config{NATSURL: srv.URL(), Stream: "LOG1", SubjectPrefix: "log1", DuplicateWindow: 5 * time.Minute, MaxAge: 24 * time.Hour}
	openLog(t, cfg, keyring(t, 1, 1))
	s, err := js.Stream(ctx, "LOG1")
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	if got.Subjects[0] != "log1.>" || got.Duplicates != 5*time.Minute || got.MaxAge != 24*time.Hour ||
		got.Storage != jetstream.FileStorage || !got.AllowAtomicPublish || got.Discard != jetstream.DiscardNew {
		t.Fatalf("created stream config %+v", got)
	}
	// Reopened with other updatable settings: updated in place.
	cfg.DuplicateWindow, cfg.MaxAge, cfg.MaxBytes = 10*time.Minute, 48*time.Hour, 1<<30
	openLog(t, cfg, keyring(t, 1, 1))
	s, _ = js.Stream(ctx, "LOG1")
	if got := s.CachedInfo().Config; got.Duplicates != 10*time.Minute || got.MaxAge != 48*time.Hour || got.MaxBytes != 1<<30 {
		t.Fatalf("updated stream config: duplicates %v, max age %v, max bytes %d", got.Duplicates, got.MaxAge, got.MaxBytes)
	}
	// Reopened with the defaults (zero settings), as a replay tool would:
	// the stream keeps what was configured.
	openLog(t, Config{NATSURL: srv.URL(), Stream: "LOG1", SubjectPrefix: "log1"}, keyring(t, 1, 1))
	s, _ = js.Stream(ctx, "LOG1")
	if got := s.CachedInfo().Config; got.Duplicates != 10*time.Minute || got.MaxAge != 48*time.Hour || got.MaxBytes != 1<<30 || got.Replicas != 1 {
		t.Fatalf("stream config after an open with defaults: duplicates %v, max age %v, max bytes %d, replicas %d",
			got.Duplicates, got.MaxAge, got.MaxBytes, got.Replicas)
	}
	// Unbounded lifts the limits.
	cfg.MaxAge, cfg.MaxBytes = Unbounded, Unbounded
	openLog(t, cfg, keyring(t, 1, 1))
	s, _ = js.Stream(ctx, "LOG1")
	if got := s.CachedInfo().Config; got.MaxAge != 0 || got.MaxBytes != -1 {
		t.Fatalf("stream limits after Unbounded: max age %v, max bytes %d", got.MaxAge, got.MaxBytes)
	}

	// A stream an operator switched direct gets on for: the Log turns them
	// off (replicas would answer its tail lookups), and appends and reads
	// work as before.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DIRECT", Subjects: []string{"direct.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, Config{NATSURL: srv.URL(), Stream: "DIRECT", SubjectPrefix: "direct"}, keyring(t, 1, 1))
	if s, _ = js.Stream(ctx, "DIRECT"); s.CachedInfo().Config.AllowDirect {
		t.Fatal("Open left direct gets on")
	}
	a := group(instA, "direct")
	mustAppend(t, l, 0, msg(a, 1, "one"))
	mustAppend(t, l, 1, msg(a, 2, "two"))
	if recs := readAll(t, l, instA, 1); len(recs) != 2 {
		t.Fatalf("read %d events back, want 2", len(recs))
	}

	// Incompatible: other subjects, other storage.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHERSUBJ", Subjects: []string{"elsewhere.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Config{NATSURL: srv.URL(), Stream: "OTHERSUBJ", SubjectPrefix: "mine"}, keyring(t, 1, 1))
	if !errors.Is(err, ErrIncompatibleStream) || !strings.Contains(err.Error(), "subjects") {
		t.Fatalf("other subjects: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MEM", Subjects: []string{"mem.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Config{NATSURL: srv.URL(), Stream: "MEM", SubjectPrefix: "mem"}, keyring(t, 1, 1))
	if !errors.Is(err, ErrIncompatibleStream) || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("other storage: %v", err)
	}
	// Memory storage when asked for.
	openLog(t, Config{NATSURL: srv.URL(), Stream: "MEM", SubjectPrefix: "mem", Storage: MemoryStorage}, keyring(t, 1, 1))
}

func TestUserPasswordAuth(t *testing.T) {
	const pw = "s3cret-pass-word"
	srv := natstest.Start(t, natstest.Options{User: "epoch", Password: pw})
	cfg := Config{NATSURL: srv.URL(), User: "epoch", Password: NewSecret(pw), RequestTimeout: 2 * time.Second}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "auth"), 1, "ok"))

	cfg.Password = NewSecret("wrong-" + pw)
	_, err := Open(context.Background(), cfg, keyring(t, 1, 0x11))
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error echoes the password: %v", err)
	}
}

// An existing stream whose settings would drop or hide acknowledged events
// is refused, naming the setting; so is a Config limit that would make a
// discard-old stream drop them.
func TestStreamThatLosesEventsRefused(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for i, tc := range []struct {
		name, want string
		set        func(c *jetstream.StreamConfig)
		cfg        func(c *Config)
	}{
		{"per subject", "max messages per subject", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }, nil},
		{"transform", "subject transform", func(c *jetstream.StreamConfig) {
			c.SubjectTransform = &jetstream.SubjectTransformConfig{Source: ">", Destination: "moved.>"}
		}, nil},
		{"max msgs, discard old", "discard policy old", func(c *jetstream.StreamConfig) { c.MaxMsgs, c.Discard = 3, jetstream.DiscardOld }, nil},
		{"max bytes, discard old", "discard policy old", func(c *jetstream.StreamConfig) { c.MaxBytes, c.Discard = 1<<20, jetstream.DiscardOld }, nil},
		{"Config max bytes, discard old", "discard policy old", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld },
			func(c *Config) { c.MaxBytes = 1 << 20 }},
	} {
		prefix := fmt.Sprintf("lose%d", i)
		sc := jetstream.StreamConfig{Name: strings.ToUpper(prefix), Subjects: []string{prefix + ".>"}}
		tc.set(&sc)
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		cfg := testConfig(srv)
		cfg.Stream, cfg.SubjectPrefix = sc.Name, prefix
		if tc.cfg != nil {
			tc.cfg(&cfg)
		}
		for _, ro := range []bool{false, true} {
			cfg.ReadOnly = ro
			l, err := Open(ctx, cfg, keyring(t, 1, 1))
			if err == nil {
				l.Close()
			}
			if tc.cfg != nil && ro {
				continue // a reader sets no limit
			}
			if !errors.Is(err, ErrIncompatibleStream) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s (read-only %v): open: %v, want ErrIncompatibleStream naming %q", tc.name, ro, err, tc.want)
			}
		}
	}
}

// A stream edited while a Log runs so that it would drop events (here a
// per-subject limit, as `nats stream edit --max-msgs-per-subject 1` sets)
// stops the Log's appends with ErrIncompatibleStream, naming the setting,
// before the server can drop anything; edited back, appends go on. Until
// 2026-12-06 only the next Open noticed, and the appends meanwhile were
// acknowledged and then dropped by the server.
func TestStreamEditedWhileOpenStopsAppends(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	l := openLog(t, testConfig(srv), keyring(t, 1, 1))
	g := group(instA, "g")
	mustAppend(t, l, 0, msg(g, 1, "before the edit"))

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	edit := func(perSubject int64) {
		t.Helper()
		s, err := js.Stream(ctx, l.Stream())
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.MaxMsgsPerSubject = perSubject
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// The advisory reaches the Log asynchronously: an append racing it
	// may still be stored (and an older event of its subject dropped by
	// the server). The Log must refuse within moments, and from then on.
	edit(1)
	pos := uint64(2)
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := l.Append(ctx, pos-1, msg(g, pos, "after the edit"))
		if err == nil {
			if time.Now().After(deadline) {
				t.Fatalf("appends still stored a minute after the stream was edited to keep one event per subject (position %d)", pos)
			}
			pos++
			continue
		}
		if !errors.Is(err, ErrIncompatibleStream) || !strings.Contains(err.Error(), "max messages per subject") {
			t.Fatalf("append at %d after the edit: %v, want ErrIncompatibleStream naming the setting", pos, err)
		}
		break
	}
	t.Logf("appends stored while the edit's advisory was on its way: %d", pos-2)
	for range 3 {
		if _, err := l.Append(ctx, pos-1, msg(g, pos, "still refused")); !errors.Is(err, ErrIncompatibleStream) {
			t.Fatalf("append after the first refusal: %v, want ErrIncompatibleStream", err)
		}
	}
	edit(-1)
	deadline = time.Now().Add(time.Minute)
	for {
		_, err := l.Append(ctx, pos-1, msg(g, pos, "edited back"))
		if err == nil {
			break
		}
		if !errors.Is(err, ErrIncompatibleStream) || time.Now().After(deadline) {
			t.Fatalf("append after the stream was edited back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
