package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
	"github.com/nats-io/nats-server/v2/server"
)

// observed adds a fresh Metrics and a JSON log buffer to cfg.
func observed(cfg Config) (Config, *telemetry.Metrics, *telemetrytest.Logs) {
	m, logs := telemetry.NewMetrics(), &telemetrytest.Logs{}
	cfg.Metrics, cfg.Logger = m, logs.Logger()
	return cfg, m, logs
}

// waitUntil polls cond for up to a minute (CI shares two cores).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func enqueued(inst events.InstallationID, ch string, pos uint64) events.Event {
	return events.Event{
		Aggregate: events.Aggregate{Installation: inst, Type: events.AggDelivery, ID: ch},
		Position:  pos,
		Time:      baseTime.Add(time.Duration(pos) * time.Second),
		Body:      events.DeliveryEnqueued{Recipient: inst, Channel: ch, Sequence: pos, Payload: []byte("p")},
	}
}

// Appends count by kind once acknowledged (Append and AppendBulk), each
// append's latency is observed once, and an append at a stale position
// counts as a conflict and is logged.
func TestMetricsOfAppends(t *testing.T) {
	srv := natstestStart(t)
	cfg, m, logs := observed(testConfig(srv))
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	if got := telemetrytest.Value(t, m, "epochlog_nats_connected"); got != 1 {
		t.Errorf("nats_connected after Open = %v, want 1", got)
	}
	msgKind, delKind := string(events.KindApplicationMessageSent), string(events.KindDeliveryEnqueued)

	agg := group(instA, "metrics")
	for i := range 3 {
		mustAppend(t, l, uint64(i), msg(agg, uint64(i)+1, "x"))
	}
	mustAppend(t, l, 3, msg(agg, 4, "y"), msg(agg, 5, "z")) // one atomic batch
	var ts []Transition
	for i := range 4 {
		ts = append(ts, Transition{Expected: 0, Events: []events.Event{enqueued(instB, fmt.Sprint("ch", i), 1)}})
	}
	if _, err := l.AppendBulk(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	if got := telemetrytest.Value(t, m, "epochlog_events_appended_total", "kind", msgKind); got != 5 {
		t.Errorf("appended %s = %v, want 5", msgKind, got)
	}
	if got := telemetrytest.Value(t, m, "epochlog_events_appended_total", "kind", delKind); got != 4 {
		t.Errorf("appended %s = %v, want 4", delKind, got)
	}
	if got := telemetrytest.Value(t, m, "epochlog_append_duration_seconds"); got != 8 {
		t.Errorf("append latency observed %v times, want 8 (4 appends, 4 bulk transitions)", got)
	}
	if got := telemetrytest.Value(t, m, "epochlog_append_conflicts_total"); got != 0 {
		t.Errorf("conflicts before any race = %v", got)
	}

	// Another writer was first at position 6.
	mustAppend(t, l, 5, msg(agg, 6, "first"))
	if _, err := l.Append(context.Background(), 5, msg(agg, 6, "second")); !errors.Is(err, ErrConflict) {
		t.Fatalf("append at a stale position: %v, want ErrConflict", err)
	}
	if got := telemetrytest.Value(t, m, "epochlog_append_conflicts_total"); got != 1 {
		t.Errorf("conflicts = %v, want 1", got)
	}
	if got := telemetrytest.Value(t, m, "epochlog_events_appended_total", "kind", msgKind); got != 6 {
		t.Errorf("appended %s after a refused append = %v, want 6", msgKind, got)
	}
	recs := logs.Find(t, "DEBUG", "append conflict")
	if len(recs) != 1 || recs[0].Str("installation") != string(instA) || recs[0].Str("stream") != l.Stream() ||
		recs[0].Str("kind") != msgKind || recs[0].Str("seq") == "" {
		t.Errorf("conflict log records %v, want one naming installation, stream, kind and seq", recs)
	}
	if opens := logs.Find(t, "INFO", "log open"); len(opens) != 1 {
		t.Errorf("no Info record of the open: %s", logs.String())
	} else if got, ok := opens[0]["max_payload"].(float64); !ok || int64(got) != l.nc.MaxPayload() || got == 0 {
		t.Errorf("the open's record gives max_payload %v, the server's is %d", opens[0]["max_payload"], l.nc.MaxPayload())
	}
	for _, secret := range []string{"first", "second"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds the content %q", secret)
		}
	}
}

// A server restart counts as a loss and a reconnection, logged at Warn
// and Info; the server is named without the user and password of the URL.
// Closing the Log is no loss: the gauge drops, nothing more is counted.
func TestMetricsOfReconnect(t *testing.T) {
	const user, password = "svc-user", "pw-Zq9-never-logged"
	srv := natstest.Start(t, natstest.Options{User: user, Password: password})
	cfg, m, logs := observed(testConfig(srv))
	cfg.NATSURL = fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, password, srv.Port())
	l, err := Open(context.Background(), cfg, keyring(t, 1, 0x11))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	srv.Restart()
	// The reconnect is counted, then logged: the record is part of the
	// wait, not read at the moment the count is seen.
	waitUntil(t, "reconnect counted and logged", func() bool {
		return telemetrytest.Value(t, m, "epochlog_nats_reconnects_total") >= 1 && l.Connected() &&
			len(logs.Find(t, "INFO", "connection regained")) > 0
	})
	if got := telemetrytest.Value(t, m, "epochlog_nats_disconnects_total"); got < 1 {
		t.Errorf("disconnects = %v, want at least 1", got)
	}
	if got := telemetrytest.Value(t, m, "epochlog_nats_connected"); got != 1 {
		t.Errorf("nats_connected after the reconnect = %v, want 1", got)
	}
	lost := logs.Find(t, "WARN", "connection lost")
	if len(lost) == 0 || lost[0].Str("err") == "" || lost[0].Str("stream") != l.Stream() {
		t.Errorf("loss records %v, want a Warn with the error and the stream", lost)
	}
	back := logs.Find(t, "INFO", "connection regained")
	want := fmt.Sprintf("nats://127.0.0.1:%d", srv.Port())
	if len(back) == 0 || back[0].Str("server") != want {
		t.Errorf("reconnect records %v, want an Info naming server %s", back, want)
	}
	mustAppend(t, l, 0, msg(group(instA, "after"), 1, "x"))

	disconnects := telemetrytest.Value(t, m, "epochlog_nats_disconnects_total")
	l.Close()
	waitUntil(t, "connection closed", func() bool { return len(logs.Find(t, "INFO", "connection closed")) > 0 })
	if got := telemetrytest.Value(t, m, "epochlog_nats_connected"); got != 0 {
		t.Errorf("nats_connected after Close = %v, want 0", got)
	}
	if got := telemetrytest.Value(t, m, "epochlog_nats_disconnects_total"); got != disconnects {
		t.Errorf("Close counted as a loss: disconnects %v, was %v", got, disconnects)
	}
	for _, leak := range []string{password, user + ":"} {
		if strings.Contains(logs.String(), leak) {
			t.Errorf("log holds %q:\n%s", leak, logs.String())
		}
	}
}

// A stream leader election on a cluster counts and is logged at Warn,
// naming the new leader.
func TestMetricsOfLeaderChange(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	cfg, m, logs := observed(clusterConfig(c.URL()))
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "leader"), 1, "x"))
	c.WaitStreamCurrent(l.Stream())
	before := telemetrytest.Value(t, m, "epochlog_stream_leader_changes_total")
	recorded := len(logs.Find(t, "WARN", "eventlog: stream leader "))
	old := c.StreamLeader(l.Stream())
	old.Shutdown()
	defer old.Start()
	// A change is counted, then logged: the record is part of the wait,
	// not read at the moment the count is seen.
	waitUntil(t, "leader change counted and logged", func() bool {
		return telemetrytest.Value(t, m, "epochlog_stream_leader_changes_total") > before &&
			len(logs.Find(t, "WARN", "eventlog: stream leader ")) > recorded
	})
	var leaders []string
	for _, r := range logs.Find(t, "WARN", "eventlog: stream leader ") {
		if r.Str("stream") != l.Stream() {
			t.Errorf("leader record names stream %q", r.Str("stream"))
		}
		leaders = append(leaders, r.Str("leader"))
	}
	last := ""
	if len(leaders) > 0 {
		last = leaders[len(leaders)-1]
	}
	if last == "" || last == old.Name() {
		t.Errorf("leader records name %v after %s went down, want another node", leaders, old.Name())
	}
}

// An account that may not subscribe to JetStream advisories opens the Log
// all the same; the refusal is logged at Debug and nothing is counted.
func TestLeaderAdvisoryWithoutPermission(t *testing.T) {
	opts := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "u", Password: "p", Permissions: &server.Permissions{
			Subscribe: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.EVENT.>"}},
		}}},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(srv.Shutdown)
	cfg, m, logs := observed(Config{NATSURL: srv.ClientURL(), User: "u", Password: NewSecret("p"), RequestTimeout: 5 * time.Second})
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "perm"), 1, "x"))
	waitUntil(t, "permission refusal logged", func() bool {
		return len(logs.Find(t, "DEBUG", "no permission to follow the stream's leader elections")) > 0
	})
	if got := telemetrytest.Value(t, m, "epochlog_stream_leader_changes_total"); got != 0 {
		t.Errorf("leader changes = %v, want 0", got)
	}
	if len(logs.Find(t, "WARN", "")) != 0 || len(logs.Find(t, "ERROR", "")) != 0 {
		t.Errorf("warnings or errors logged: %s", logs.String())
	}
}

// A read that stalls is logged at Error, naming the installation.
func TestStalledReadLogged(t *testing.T) {
	srv := natstestStart(t)
	cfg, _, logs := observed(testConfig(srv))
	cfg.ProgressTimeout = 2 * time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "s"), 1, "one"))
	c := newCollector()
	done := make(chan error, 1)
	go func() { done <- l.Follow(context.Background(), instA, 0, c.add) }()
	c.waitFor(t, 1)
	srv.Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("follow with its server gone: %v, want ErrStalled", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("follow with its server gone did not end")
	}
	recs := logs.Find(t, "ERROR", "read stalled")
	if len(recs) != 1 || recs[0].Str("installation") != string(instA) || recs[0].Str("err") == "" {
		t.Errorf("stall records %v, want one Error naming the installation and the error", recs)
	}
	if len(logs.Find(t, "WARN", "follow lost its consumer")) == 0 {
		t.Errorf("no Warn for the follow's lost consumer: %s", logs.String())
	}
}

// A password logged by mistake prints redacted, whatever the handler.
func TestSecretLogValue(t *testing.T) {
	logs := &telemetrytest.Logs{}
	logs.Logger().Info("config", "password", NewSecret("hunter2"), "cfg", Config{User: "u", Password: NewSecret("hunter2")})
	var text strings.Builder
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "password", NewSecret("hunter2"))
	for _, out := range []string{logs.String(), text.String()} {
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "REDACTED") {
			t.Errorf("logged secret: %s", out)
		}
	}
}
