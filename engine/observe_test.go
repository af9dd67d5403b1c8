package engine

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// rootFill is every byte of the observed backends' root key.
const rootFill = 0xA7

// observedBackend is newBackend with a Metrics and a JSON log buffer at
// Debug on its Log, and read model keys of known bytes (dbFill + i for
// the i-th installation created with createKnown).
type observedBackend struct {
	*backend
	m      *telemetry.Metrics
	logs   *telemetrytest.Logs
	dbRaw  map[events.InstallationID][]byte
	dbFill byte
}

func newObservedBackend(t *testing.T) *observedBackend {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	o := &observedBackend{m: telemetry.NewMetrics(), logs: &telemetrytest.Logs{}, dbRaw: map[events.InstallationID][]byte{}, dbFill: 0x61}
	o.backend = &backend{t: t, srv: srv, ring: keyring(t, 1, rootFill), dir: t.TempDir(),
		insts: map[events.InstallationID]*Installation{}, keys: map[events.InstallationID]projections.Key{},
		now: time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)}
	l, err := eventlog.Open(context.Background(), o.config(), o.ring)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	o.log = l
	o.del = NewDeliveries(l, o.clock)
	t.Cleanup(o.close)
	return o
}

// config is the Log's configuration, observed.
func (o *observedBackend) config() eventlog.Config {
	cfg := testConfig(o.srv)
	cfg.Metrics, cfg.Logger = o.m, o.logs.Logger()
	return cfg
}

// createKnown creates id with a raw read-model key of known bytes.
func (o *observedBackend) createKnown(id events.InstallationID) *Installation {
	o.t.Helper()
	raw := bytes.Repeat([]byte{o.dbFill}, projections.KeySize)
	o.dbFill++
	k, err := projections.RawKey(raw)
	if err != nil {
		o.t.Fatal(err)
	}
	in, err := CreateInstallation(context.Background(), o.log, id, o.dbPath(id), k, o.opts())
	if err != nil {
		o.t.Fatalf("create %s: %v", id, err)
	}
	o.insts[id], o.keys[id], o.dbRaw[id] = in, k, raw
	return in
}

func (o *observedBackend) value(name string, labels ...string) float64 {
	o.t.Helper()
	return telemetrytest.Value(o.t, o.m, name, labels...)
}

// The open read models gauge follows installations opening and closing
// (a second Close counts nothing), and the events an installation applies
// count by kind.
func TestMetricsOfReadModels(t *testing.T) {
	o := newObservedBackend(t)
	o.createKnown(alice)
	o.createKnown(bob)
	if got := o.value("epochlog_read_models_open"); got != 2 {
		t.Fatalf("read models open after two creates = %v, want 2", got)
	}
	o.restart(alice)
	if got := o.value("epochlog_read_models_open"); got != 2 {
		t.Fatalf("read models open after a restart = %v, want 2", got)
	}
	if err := o.insts[bob].Close(); err != nil {
		t.Fatal(err)
	}
	_ = o.insts[bob].Close()
	delete(o.insts, bob)
	if got := o.value("epochlog_read_models_open"); got != 1 {
		t.Fatalf("read models open after closing one (twice) = %v, want 1", got)
	}
	// A create refused (the installation exists) leaves nothing open.
	if _, err := CreateInstallation(context.Background(), o.log, alice, o.dbPath(alice)+"-2", o.keys[alice], o.opts()); err == nil {
		t.Fatal("second create of alice succeeded")
	}
	if got := o.value("epochlog_read_models_open"); got != 1 {
		t.Fatalf("read models open after a refused create = %v, want 1", got)
	}
	created := string(events.KindInstallationCreated)
	// alice's and bob's creates, and alice's restart into an existing
	// read model applies nothing new.
	if got := o.value("epochlog_events_applied_total", "kind", created); got != 2 {
		t.Errorf("installation.created applied %v times, want 2", got)
	}
	if got := o.value("epochlog_events_appended_total", "kind", created); got != 2 {
		t.Errorf("installation.created appended %v times, want 2", got)
	}
	o.close()
	if got := o.value("epochlog_read_models_open"); got != 0 {
		t.Fatalf("read models open after closing all = %v, want 0", got)
	}
	if len(o.logs.Find(t, "DEBUG", "installation created")) != 2 || len(o.logs.Find(t, "DEBUG", "installation opened")) != 1 {
		t.Errorf("lifecycle records missing:\n%s", o.logs.String())
	}
}

// Two processes of one installation race on a group: the loser's Log
// counts the conflict, its engine the retry (reason conflict) and logs
// that it caught up and decided again.
func TestMetricsOfRacingWriters(t *testing.T) {
	ctx := context.Background()
	o := newObservedBackend(t)
	g1, _ := setupGroups(t, o.backend)
	if got := o.value("epochlog_append_conflicts_total"); got != 0 {
		t.Fatalf("conflicts before any race = %v", got)
	}
	cfg2 := testConfig(o.srv)
	m2, logs2 := telemetry.NewMetrics(), &telemetrytest.Logs{}
	cfg2.Metrics, cfg2.Logger = m2, logs2.Logger()
	l2, err := eventlog.Open(ctx, cfg2, o.ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	alice2, err := OpenInstallation(ctx, l2, alice, o.dbPath(alice)+"-p2", o.keys[alice], o.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer alice2.Close()
	if _, err := alice2.Epoch(ctx, g1); err != nil {
		t.Fatal(err)
	}
	if _, err := o.insts[alice].Update(ctx, g1); err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.Update(ctx, g1); err != nil {
		t.Fatalf("the losing process: %v", err)
	}
	if got := telemetrytest.Value(t, m2, "epochlog_append_conflicts_total"); got != 1 {
		t.Errorf("loser's conflicts = %v, want 1", got)
	}
	if got := telemetrytest.Value(t, m2, "epochlog_append_retries_total", "reason", telemetry.RetryConflict); got != 1 {
		t.Errorf("loser's conflict retries = %v, want 1", got)
	}
	if got := o.value("epochlog_append_conflicts_total"); got != 0 {
		t.Errorf("winner's conflicts = %v, want 0", got)
	}
	recs := logs2.Find(t, "INFO", "another writer appended first")
	if len(recs) != 1 || recs[0].Str("installation") != string(alice) || recs[0].Str("aggregate") != string(events.AggGroup) {
		t.Errorf("loser's records %v, want one Info naming the installation and the aggregate type", recs)
	}
	if got := telemetrytest.Value(t, m2, "epochlog_read_models_open"); got != 1 {
		t.Errorf("second process's open read models = %v, want 1", got)
	}
}

// A realistic flow logged at Debug (installations, a group, messages, a
// server restart, two processes racing, a rebuild and a rekey) leaves the
// records an operator needs and none of the secrets: the root key, the
// read models' keys, signature private keys, message content.
func TestLogsRedactSecrets(t *testing.T) {
	ctx := context.Background()
	o := newObservedBackend(t)
	for _, id := range []events.InstallationID{alice, bob, carol} {
		o.createKnown(id)
	}
	created, err := o.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := created.GroupID
	co, err := o.insts[alice].AddMembers(ctx, g, o.keyPackage(bob), o.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	o.deliverCommit(co)
	o.drainAll()
	const content = "meet at the old mill, 23:40 - codeword PELICAN"
	o.send(alice, g, content)
	if got := o.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != content {
		t.Fatalf("bob received %d messages", len(got))
	}

	// The server restarts under the Log.
	o.srv.Restart()
	deadline := time.Now().Add(time.Minute)
	for o.value("epochlog_nats_reconnects_total") < 1 || !o.log.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect after a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	o.send(bob, g, content+" (reply)")
	o.drainAll()

	// A second process of alice on the same Log loses a race.
	alice2, err := OpenInstallation(ctx, o.log, alice, o.dbPath(alice)+"-p2", o.keys[alice], o.opts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.Epoch(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := o.insts[alice].Update(ctx, g); err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.Update(ctx, g); err != nil {
		t.Fatal(err)
	}
	alice2.Close()

	// Secrets the read models hold, to look for in the logs.
	var sigKeys [][]byte
	for _, id := range []events.InstallationID{alice, bob, carol} {
		ident, _, err := o.insts[id].DB().Installation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sigKeys = append(sigKeys, ident.SignaturePrivateKey.Bytes())
	}

	// Rebuild and rekey alice's read model (its installation closed).
	if err := o.insts[alice].Close(); err != nil {
		t.Fatal(err)
	}
	delete(o.insts, alice)
	path := o.dbPath(alice)
	if _, err := replay.Rebuild(ctx, o.log, alice, path, o.keys[alice], nil); err != nil {
		t.Fatal(err)
	}
	newRaw := bytes.Repeat([]byte{0x7E}, projections.KeySize)
	newKey, err := projections.RawKey(newRaw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Rekey(ctx, o.log, alice, path, o.keys[alice], newKey, nil); err != nil {
		t.Fatal(err)
	}
	o.keys[alice] = newKey
	o.restart2(alice)

	for _, want := range []struct{ level, msg string }{
		{"WARN", "NATS connection lost"},
		{"INFO", "NATS connection regained"},
		{"INFO", "another writer appended first"},
		{"DEBUG", "append conflict"},
		{"INFO", "rebuild finished"},
		{"INFO", "rekey finished"},
		{"DEBUG", "installation created"},
		{"DEBUG", "engine: recorded"},
		{"DEBUG", "engine: projected"},
	} {
		if len(o.logs.Find(t, want.level, want.msg)) == 0 {
			t.Errorf("no %s record %q", want.level, want.msg)
		}
	}

	out := o.logs.String()
	secrets := map[string][]byte{"root key": bytes.Repeat([]byte{rootFill}, 32), "rekeyed DB key": newRaw}
	for id, raw := range o.dbRaw {
		secrets["DB key of "+string(id)] = raw
	}
	for i, k := range sigKeys {
		secrets[fmt.Sprint("signature key ", i)] = k
	}
	for what, raw := range secrets {
		for enc, s := range map[string]string{
			"raw": string(raw), "hex": hex.EncodeToString(raw), "HEX": strings.ToUpper(hex.EncodeToString(raw)),
			"base64": base64.StdEncoding.EncodeToString(raw), "base64url": base64.RawURLEncoding.EncodeToString(raw),
			"Go bytes": fmt.Sprint(raw),
		} {
			if strings.Contains(out, s) {
				t.Errorf("the logs hold the %s (%s)", what, enc)
			}
		}
	}
	for _, s := range []string{content, "PELICAN", hex.EncodeToString([]byte(content)), base64.StdEncoding.EncodeToString([]byte(content))} {
		if strings.Contains(out, s) {
			t.Errorf("the logs hold the message content (%q)", s)
		}
	}
	if testing.Verbose() {
		t.Logf("%d log records", len(o.logs.Records(t)))
	}
}

// restart2 opens id again after it was closed outside the backend.
func (o *observedBackend) restart2(id events.InstallationID) {
	o.t.Helper()
	in, err := OpenInstallation(context.Background(), o.log, id, o.dbPath(id), o.keys[id], o.opts())
	if err != nil {
		o.t.Fatalf("reopen %s: %v", id, err)
	}
	o.insts[id] = in
}

// An append sent while the server is away is tried again with the same
// events until it is answered: each retry counts (reason lost_answer or
// no_leader) and is logged at Warn; the enqueue lands once.
func TestMetricsOfLostAnswer(t *testing.T) {
	t.Parallel() // mostly waits on its own servers; sets no package variable
	o := newObservedBackend(t)
	ctx := context.Background()
	if _, _, err := o.del.Enqueue(ctx, Enqueue{Recipient: alice, Channel: "q", Payload: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	o.srv.Shutdown()
	back := make(chan struct{})
	go func() {
		defer close(back)
		// Long enough for a few tries to fail; the outcome is decided
		// whenever the server returns.
		time.Sleep(time.Second)
		o.srv.Start()
	}()
	seq, _, err := o.del.Enqueue(ctx, Enqueue{Recipient: alice, Channel: "q", Payload: []byte("two")})
	<-back
	if err != nil || seq != 2 {
		t.Fatalf("enqueue across a server restart: seq %d, %v; want 2", seq, err)
	}
	retries := o.value("epochlog_append_retries_total", "reason", telemetry.RetryLostAnswer) +
		o.value("epochlog_append_retries_total", "reason", telemetry.RetryNoLeader)
	if retries < 1 {
		t.Errorf("retries across a server restart = %v, want at least 1", retries)
	}
	recs := o.logs.Find(t, "WARN", "append unanswered")
	if len(recs) == 0 || recs[0].Str("installation") != string(alice) || recs[0].Str("reason") == "" || recs[0].Str("err") == "" {
		t.Errorf("retry records %v, want Warn records naming installation, reason and error", recs)
	}
	if got := len(recs); float64(got) != retries {
		t.Errorf("%d Warn records for %v retries", got, retries)
	}
	ds, err := o.del.Fetch(ctx, alice, "q", 0)
	if err != nil || len(ds) != 2 {
		t.Fatalf("queue after the retries: %d messages, %v; want 2", len(ds), err)
	}
}
