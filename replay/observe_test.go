package replay

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
	"github.com/nats-io/nats.go/jetstream"
)

// observedLog opens a Log on a fresh server with a Metrics and a JSON log
// buffer.
func observedLog(t *testing.T) (*eventlog.Log, *telemetry.Metrics, *telemetrytest.Logs) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	m, logs := telemetry.NewMetrics(), &telemetrytest.Logs{}
	cfg := testConfig(srv)
	cfg.Metrics, cfg.Logger = m, logs.Logger()
	return openLog(t, cfg, keyring(t, 1, 0x11)), m, logs
}

// kindsOn counts inst's events on the stream by kind.
func kindsOn(t *testing.T, l *eventlog.Log, inst events.InstallationID) map[string]int {
	t.Helper()
	out := map[string]int{}
	if err := l.Read(context.Background(), inst, 0, func(r eventlog.Record) error {
		out[string(r.Event.Body.Kind())]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A rebuild counts every event it applies by kind and logs its start and
// finish; CatchUp records the read model's lag as it goes: behind before
// it has applied everything, caught up (0 events, 0 s, the checkpoint at
// the stream's last event) after.
func TestMetricsOfRebuildAndCatchUp(t *testing.T) {
	l, m, logs := observedLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 60)
	kinds := kindsOn(t, l, instA)
	total := 0
	for _, n := range kinds {
		total += n
	}
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x21)
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range kinds {
		if got := telemetrytest.Value(t, m, "epochlog_events_applied_total", "kind", k); got != float64(n) {
			t.Errorf("applied %s = %v after a rebuild, want %d", k, got, n)
		}
	}
	started, finished := logs.Find(t, "INFO", "rebuild started"), logs.Find(t, "INFO", "rebuild finished")
	if len(started) != 1 || len(finished) != 1 {
		t.Fatalf("rebuild records: %d started, %d finished; want 1 each:\n%s", len(started), len(finished), logs.String())
	}
	f := finished[0]
	if f.Str("installation") != string(instA) || f.Str("events") != itoa(total) || f.Str("duration") == "" || f.Str("seq") != itoa(int(res.Checkpoint)) {
		t.Errorf("rebuild finished record %v, want installation, events %d, seq %d, duration", f, total, res.Checkpoint)
	}

	// A second read model of the same installation, caught up in batches.
	db, err := projections.Open(filepath.Join(t.TempDir(), "b.db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var lagDuring, ageDuring []float64
	opts := &Options{BatchSize: 8, SkipMLSCheck: true, Progress: func(Progress) {
		lagDuring = append(lagDuring, telemetrytest.Value(t, m, "epochlog_projector_lag_events", "installation", string(instA)))
		ageDuring = append(ageDuring, telemetrytest.Value(t, m, "epochlog_projector_lag_seconds", "installation", string(instA)))
	}}
	n, cp, err := CatchUp(ctx, l, instA, db, opts)
	if err != nil || n != total {
		t.Fatalf("catch up: %d events, %v; want %d", n, err, total)
	}
	if len(lagDuring) < 2 || lagDuring[0] <= 0 {
		t.Errorf("lag after the first batches %v, want > 0", lagDuring)
	}
	if got := lagDuring[0]; got != float64(total-8) {
		t.Errorf("lag after the first batch of 8 = %v, want %d", got, total-8)
	}
	if ageDuring[0] <= 0 {
		t.Errorf("age of the oldest pending event after the first batch = %v s, want > 0", ageDuring[0])
	}
	for name, want := range map[string]float64{
		"epochlog_projector_lag_events":  0,
		"epochlog_projector_lag_seconds": 0,
		"epochlog_projector_checkpoint":  float64(lastSeq(t, l, instA)),
	} {
		if got, ok := telemetrytest.Lookup(t, m, name, "installation", string(instA)); !ok || got != want {
			t.Errorf("%s after catching up = %v (exists %v), want %v", name, got, ok, want)
		}
	}
	if cp != lastSeq(t, l, instA) {
		t.Errorf("checkpoint %d, want %d", cp, lastSeq(t, l, instA))
	}

	if got := telemetrytest.Value(t, m, "epochlog_events_applied_total", "kind", string(events.KindInstallationCreated)); got != 2 {
		t.Errorf("installation.created applied %v times (rebuild and catch-up), want 2", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Project records each followed read model's lag: behind while it
// catches up, 0 once it has, and drops the series when it stops.
func TestMetricsOfProject(t *testing.T) {
	l, m, logs := observedLog(t)
	dir := t.TempDir()
	key := rawDBKey(t, 0x31)
	insts := []events.InstallationID{instA, instB}
	for _, inst := range insts {
		writeHistory(t, l, inst, 1, 80)
	}
	var ps []Projection
	for _, inst := range insts {
		db, err := projections.Open(filepath.Join(dir, string(inst)+".db"), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ps = append(ps, Projection{Installation: inst, DB: db})
	}
	targets := map[events.InstallationID]uint64{}
	for _, inst := range insts {
		targets[inst] = lastSeq(t, l, inst)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var firstLag float64 = -1
	done := make(chan error, 1)
	go func() {
		done <- Project(ctx, l, ps, &ProjectOptions{BatchSize: 16, OnApply: func(inst events.InstallationID, n int, cp uint64) {
			mu.Lock()
			defer mu.Unlock()
			if firstLag < 0 {
				firstLag = telemetrytest.Value(t, m, "epochlog_projector_lag_events", "installation", string(inst))
			}
		}})
	}()
	// The checkpoint, the lag in events and the lag in seconds are set
	// one after the other: the lag in seconds is part of the wait, not
	// read at the moment the other two are seen (a wait that does not end
	// fails as a lag in seconds left after catching up would).
	for _, inst := range insts {
		waitFor(t, string(inst)+" caught up, lag 0 events and 0 seconds", func() bool {
			cp, ok := telemetrytest.Lookup(t, m, "epochlog_projector_checkpoint", "installation", string(inst))
			lag := telemetrytest.Value(t, m, "epochlog_projector_lag_events", "installation", string(inst))
			secs := telemetrytest.Value(t, m, "epochlog_projector_lag_seconds", "installation", string(inst))
			return ok && cp == float64(targets[inst]) && lag == 0 && secs == 0
		})
	}
	mu.Lock()
	if firstLag <= 0 {
		t.Errorf("lag at the first applied batch = %v, want > 0", firstLag)
	}
	mu.Unlock()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("project after cancel: %v", err)
	}
	for _, inst := range insts {
		if _, ok := telemetrytest.Lookup(t, m, "epochlog_projector_lag_events", "installation", string(inst)); ok {
			t.Errorf("%s: projector series left after Project returned", inst)
		}
	}
	want := 0
	for _, inst := range insts {
		for _, n := range kindsOn(t, l, inst) {
			want += n
		}
	}
	var applied float64
	for _, k := range events.Kinds() {
		applied += telemetrytest.Value(t, m, "epochlog_events_applied_total", "kind", string(k.Kind))
	}
	if applied != float64(want) {
		t.Errorf("applied %v events in all, want %d", applied, want)
	}
	if len(logs.Find(t, "INFO", "projecting stopped")) != 1 {
		t.Errorf("no Info record of Project stopping:\n%s", logs.String())
	}
}

// An event the read model refuses counts as an apply error of its kind;
// a record that cannot be opened as one of kind "unknown".
func TestMetricsOfApplyErrors(t *testing.T) {
	l, m, logs := observedLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 1, 3)
	// A member added to a group the installation never created or joined.
	bad := events.Event{Aggregate: events.Aggregate{Installation: instA, Type: events.AggGroup, ID: "ffff"}, Time: baseTime,
		Body: events.MemberAdded{GroupID: []byte{0xff, 0xff}, Epoch: 1, Leaf: 1, Identity: []byte("x")}}
	if _, err := l.Append(ctx, 0, bad); err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(filepath.Join(t.TempDir(), "a.db"), rawDBKey(t, 0x41), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, _, err = CatchUp(ctx, l, instA, db, &Options{SkipMLSCheck: true})
	var ae *projections.ApplyError
	if !errors.As(err, &ae) {
		t.Fatalf("catch up over a refused event: %v, want a *projections.ApplyError", err)
	}
	if got := telemetrytest.Value(t, m, "epochlog_apply_errors_total", "kind", ae.Kind); got != 1 || ae.Kind == "" {
		t.Errorf("apply errors of kind %q = %v, want 1", ae.Kind, got)
	}

	// Garbage on one of instB's subjects: it cannot be opened.
	writeHistory(t, l, instB, 1, 3)
	subj, err := l.Subject(events.Aggregate{Installation: instB, Type: events.AggGroup, ID: "eeee"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subj, []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	dbB, err := projections.Open(filepath.Join(t.TempDir(), "b.db"), rawDBKey(t, 0x42), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dbB.Close()
	_, _, err = CatchUp(ctx, l, instB, dbB, &Options{SkipMLSCheck: true})
	var re *eventlog.RecordError
	if !errors.As(err, &re) || re.Op != "open" {
		t.Fatalf("catch up over garbage: %v, want a *RecordError opening it", err)
	}
	if got := telemetrytest.Value(t, m, "epochlog_apply_errors_total", "kind", "unknown"); got != 1 {
		t.Errorf("apply errors of kind unknown = %v, want 1", got)
	}
	if len(logs.Find(t, "ERROR", "catch-up failed")) != 1 {
		t.Errorf("want one Error record of the failed catch-up (a tampered record):\n%s", logs.String())
	}
}

// Rekey, a damaged live file kept aside and a drifted read model are
// logged at Info, Warn and Error, and no record carries key material: not
// the raw key (bytes, hex, base64), not the passphrase.
func TestLogsOfRekeyDamageAndDrift(t *testing.T) {
	l, _, logs := observedLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 90)
	live := filepath.Join(t.TempDir(), "a.db")
	rawBytes := bytes.Repeat([]byte{0x5A}, projections.KeySize)
	key := rawDBKey(t, 0x5A)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	const passphrase = "correct horse battery staple 7"
	pass := passKey(t, passphrase)
	opts := testReplayOptions()
	if _, err := Rekey(ctx, l, instA, live, key, pass, opts); err != nil {
		t.Fatal(err)
	}
	if len(logs.Find(t, "INFO", "rekey started")) != 1 || len(logs.Find(t, "INFO", "rekey finished")) != 1 {
		t.Errorf("rekey not logged at Info:\n%s", logs.String())
	}
	if _, err := Rekey(ctx, l, instA, live, pass, key, opts); err != nil {
		t.Fatal(err)
	}

	// Drift: one message edited with the key.
	db := sqlOpen(t, live, strings.Repeat("5a", projections.KeySize))
	if _, err := db.Exec(`UPDATE messages SET content = X'00' WHERE ordinal = 3 AND group_id = ?`, genGroupID(1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Verify(ctx, l, instA, live, key, nil); !errors.Is(err, ErrDrift) {
		t.Fatalf("verify of an edited database: %v, want ErrDrift", err)
	}
	drift := logs.Find(t, "ERROR", "verify found")
	if len(drift) != 1 || !strings.Contains(drift[0].Str("err"), "messages") || drift[0].Str("installation") != string(instA) {
		t.Errorf("drift records %v, want one Error naming the table", drift)
	}

	// Damage: the rebuild keeps the damaged file aside and says where.
	damageMiddle(t, live)
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	kept := logs.Find(t, "WARN", "damaged")
	if !res.Recovered || len(kept) != 1 || kept[0].Str("kept") != res.KeptDamaged {
		t.Errorf("damage records %v (result %+v), want one Warn naming %s", kept, res, res.KeptDamaged)
	}

	out := logs.String()
	for what, secret := range map[string]string{
		"raw key":        string(rawBytes),
		"hex key":        hex.EncodeToString(rawBytes),
		"HEX key":        strings.ToUpper(hex.EncodeToString(rawBytes)),
		"base64 key":     base64.StdEncoding.EncodeToString(rawBytes),
		"base64url key":  base64.RawURLEncoding.EncodeToString(rawBytes),
		"passphrase":     passphrase,
		"message":        "message 3",
		"sealed content": "sigpriv-",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the logs hold the %s", what)
		}
	}
}
