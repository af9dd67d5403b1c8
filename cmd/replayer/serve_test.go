package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// logRecords parses the JSON log records in out (--log-format json),
// skipping the lines that are not records (the summary, the final error).
// Every line that starts with "{" must be a record with time, level and msg.
func logRecords(t testing.TB, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("a log line is not JSON: %v: %q", err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := r[k].(string); !ok {
				t.Fatalf("log record without %s: %q", k, line)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, r["time"].(string)); err != nil {
			t.Fatalf("log record time %q: %v", r["time"], err)
		}
		recs = append(recs, r)
	}
	return recs
}

// findRecord returns the first record with msg and the given attributes.
func findRecord(recs []map[string]any, msg string, attrs ...string) map[string]any {
next:
	for _, r := range recs {
		if r["msg"] != msg {
			continue
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if fmt.Sprint(r[attrs[i]]) != attrs[i+1] {
				continue next
			}
		}
		return r
	}
	return nil
}

// metricsAddr waits for follow's "serving metrics" record and returns the
// address it listens on.
func (f *runningFollow) metricsAddr(t testing.TB) string {
	t.Helper()
	var addr string
	f.waitFor(t, "the metrics server", func() bool {
		if r := findRecord(logRecords(t, f.stderr.String()), "serving metrics"); r != nil {
			addr, _ = r["addr"].(string)
		}
		return addr != ""
	})
	return addr
}

// get fetches http://addr/path and returns the status and body.
func get(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// metricValue sums the samples of the series name (every label set, or
// those whose labels contain match) in a Prometheus text exposition; -1
// when there is none.
func metricValue(t *testing.T, text, name, match string) float64 {
	t.Helper()
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return -1
	}
	return sum
}

// TestFollowMetricsHealthReady runs follow with --metrics and JSON logs:
// the log records parse and carry time, level and msg; /metrics counts
// the events follow applies and shows the projector's checkpoint;
// /readyz is 200 once caught up; /healthz is 200, then 503 naming the
// reason once the server goes away; and the endpoint stops with follow.
func TestFollowMetricsHealthReady(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("metrics-a")
	createInstallation(t, l, dir, id)
	enqueueFor(t, l, id, "before", 3)

	f := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--metrics", "127.0.0.1:0", "--log-format", "json")
	addr := f.metricsAddr(t)
	ctx := context.Background()
	caughtUp := func() bool {
		last, err := l.LastSeq(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return checkpointOf(t, dir, id) == last
	}
	f.waitFor(t, "the read model to catch up", caughtUp)

	applied := func() float64 {
		_, body := get(t, addr, "/metrics")
		return metricValue(t, body, "epochlog_events_applied_total", "")
	}
	var before float64
	f.waitFor(t, "events applied to be counted", func() bool { before = applied(); return before > 0 })
	_, body := get(t, addr, "/metrics")
	for _, want := range []string{"go_goroutines", "process_start_time_seconds", "epochlog_nats_connected 1", "epochlog_follow_read_models 1", "epochlog_read_models_open 1"} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	enqueueFor(t, l, id, "after", 5)
	f.waitFor(t, "the 5 new events to be counted", func() bool { return applied() >= before+5 })
	last, err := l.LastSeq(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "the projector checkpoint", func() bool {
		_, body := get(t, addr, "/metrics")
		return metricValue(t, body, "epochlog_projector_checkpoint", `installation="metrics-a"`) == float64(last)
	})

	f.waitFor(t, "/readyz 200", func() bool { code, _ := get(t, addr, "/readyz"); return code == http.StatusOK })
	if code, body := get(t, addr, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}

	recs := logRecords(t, f.stderr.String())
	if findRecord(recs, "following read model", "installation", "metrics-a", "level", "INFO") == nil {
		t.Fatalf("no record of following metrics-a:\n%s", f.stderr.String())
	}
	if findRecord(recs, "using an external NATS server", "url", srv.URL(), "from", "--nats") == nil {
		t.Fatalf("no record of the server used:\n%s", f.stderr.String())
	}
	if findRecord(recs, "applied events") != nil {
		t.Fatalf("a batch logged at INFO without -v:\n%s", f.stderr.String())
	}

	srv.Shutdown()
	var reason string
	f.waitFor(t, "/healthz 503", func() bool {
		var code int
		code, reason = get(t, addr, "/healthz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(reason, "not connected to NATS") {
		t.Fatalf("/healthz 503 reason: %q", reason)
	}
	code, body := get(t, addr, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"not_ready": [`) || !strings.Contains(body, "not connected to NATS") {
		t.Fatalf("/readyz while disconnected: %d %s", code, body)
	}

	// The read model may or may not have failed meanwhile (the server
	// is gone): either way follow stops, and its endpoint with it.
	if c := f.stop(); c != exitInterrupted && c != exitFailure {
		t.Fatalf("follow exited %d: %s", c, f.stderr.String())
	}
	if conn, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		conn.Close()
		t.Fatalf("the metrics endpoint %s still accepts connections after follow stopped", addr)
	}
}

// TestFollowReadyzBehind: /readyz is 503 naming the read model while its
// oldest unapplied event is older than the ready lag, and 200 once it has
// applied everything. The follower is held at a checkpoint by hand, so
// nothing races the check.
func TestFollowReadyzBehind(t *testing.T) {
	_, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("behind-a")
	createInstallation(t, l, dir, id)
	cp := checkpointOf(t, dir, id)
	enqueueFor(t, l, id, "pending", 4)

	env := ringEnv(io.Discard, io.Discard, nil)
	ops, err := startOpsServer(env, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	f := &follower{env: env, lg: env.logger(), log: l, id: id, path: dir + "/behind-a.db", opened: true, last: cp, holding: true}
	set := &followSet{log: l}
	set.add(f)
	ops.SetReadiness(func(ctx context.Context) (bool, any) {
		return followReadiness(ctx, l, set, nil, time.Nanosecond)
	})
	ops.SetLog(l)

	code, body := get(t, ops.addr, "/readyz")
	var r followReady
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body: %v: %s", err, body)
	}
	if code != http.StatusServiceUnavailable || r.Ready || len(r.NotReady) != 1 || r.NotReady[0] != string(id) ||
		r.ReadModels[0].PendingEvents != 4 || !strings.Contains(r.ReadModels[0].Reason, "4 events behind") {
		t.Fatalf("/readyz while behind: %d %s", code, body)
	}

	last, err := l.LastSeq(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.last = last
	f.mu.Unlock()
	if code, body := get(t, ops.addr, "/readyz"); code != http.StatusOK || !strings.Contains(body, `"ready": true`) {
		t.Fatalf("/readyz once caught up: %d %s", code, body)
	}

	// A failing read model is not ready, whatever its lag.
	f.mu.Lock()
	f.err = fmt.Errorf("a wrong key")
	f.mu.Unlock()
	if code, body := get(t, ops.addr, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "failing: a wrong key") {
		t.Fatalf("/readyz with a failing read model: %d %s", code, body)
	}
}

// TestMetricsAddressInUse: a --metrics address that is taken stops the
// command before it connects, naming the address; a malformed one is a
// usage error.
func TestMetricsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	var stdout, stderr syncBuffer
	code := run(context.Background(), ringEnv(&stdout, &stderr, map[string]string{envDBKey: strings.Repeat("ab", 32)}),
		[]string{"follow", "--nats", "nats://127.0.0.1:1", "--db-dir", dir, "--installation", "a", "--metrics", ln.Addr().String()})
	if code != exitFailure || !strings.Contains(stderr.String(), "--metrics "+ln.Addr().String()+": cannot listen there") ||
		!strings.Contains(stderr.String(), "address already in use") {
		t.Fatalf("follow --metrics on a port in use: exit %d: %s", code, stderr.String())
	}
	var stderr2 syncBuffer
	code = run(context.Background(), ringEnv(&stdout, &stderr2, map[string]string{envDBKey: strings.Repeat("ab", 32)}),
		[]string{"follow", "--nats", "nats://127.0.0.1:1", "--db-dir", dir, "--installation", "a", "--metrics", "9464"})
	if code != exitUsage || !strings.Contains(stderr2.String(), `--metrics "9464": want host:port`) {
		t.Fatalf("follow --metrics 9464: exit %d: %s", code, stderr2.String())
	}
}

// TestFollowReadyzAsksTheStreamOnlyWhenItMust: a read model known to hold
// every event stored until less than --ready-lag ago is ready without a
// request to the stream (a follower of thousands of read models probed
// every few seconds would put that many on the server); one whose lag
// may have grown past it is asked about, and found behind. The follower
// is held at a checkpoint by hand, so nothing races the checks.
func TestFollowReadyzAsksTheStreamOnlyWhenItMust(t *testing.T) {
	_, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("asks-a")
	createInstallation(t, l, dir, id)
	last, err := l.LastSeq(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}

	env := ringEnv(io.Discard, io.Discard, nil)
	ops, err := startOpsServer(env, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	f := &follower{env: env, lg: env.logger(), log: l, id: id, path: dir + "/asks-a.db", opened: true, last: last, holding: true}
	set := &followSet{log: l}
	set.add(f)
	var lag atomic.Int64
	lag.Store(int64(time.Hour))
	ops.SetReadiness(func(ctx context.Context) (bool, any) {
		return followReadiness(ctx, l, set, nil, time.Duration(lag.Load()))
	})
	ops.SetLog(l)
	// probe asks /readyz and says how many messages this process sent
	// the server meanwhile (requests to the stream among them).
	probe := func() (int, readModelStatus, uint64) {
		t.Helper()
		before := l.Conn().Stats().OutMsgs
		code, body := get(t, ops.addr, "/readyz")
		sent := l.Conn().Stats().OutMsgs - before
		var r followReady
		if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.ReadModels) != 1 {
			t.Fatalf("/readyz body: %v: %s", err, body)
		}
		return code, r.ReadModels[0], sent
	}

	code, st, sent := probe()
	if code != http.StatusOK || sent == 0 || st.HeldUntilSecondsAgo != 0 {
		t.Fatalf("first /readyz: %d, %+v, %d messages sent; want 200, asked of the stream", code, st, sent)
	}
	code, st, sent = probe()
	if code != http.StatusOK || sent != 0 || st.HeldUntilSecondsAgo <= 0 {
		t.Fatalf("second /readyz: %d, %+v, %d messages sent; want 200 from what the first learnt", code, st, sent)
	}

	// Events it lacks, younger than the lag: still ready, still unasked.
	enqueueFor(t, l, id, "pending", 4)
	if code, st, sent = probe(); code != http.StatusOK || sent != 0 {
		t.Fatalf("/readyz with 4 events younger than the lag: %d, %+v, %d messages sent", code, st, sent)
	}

	// Once they may be older than the lag, it asks, and finds them.
	lag.Store(int64(300 * time.Millisecond))
	time.Sleep(400 * time.Millisecond) // the events are now older than the lag
	code, st, sent = probe()
	if code != http.StatusServiceUnavailable || sent == 0 || st.PendingEvents != 4 || !strings.Contains(st.Reason, "4 events behind") {
		t.Fatalf("/readyz with 4 events older than the lag: %d, %+v, %d messages sent", code, st, sent)
	}
}

// TestFollowReadyzFromItsBatches: a follower that applied events knows,
// from its batches, that it holds every event stored until its last one,
// and its first /readyz answers from that without asking the stream.
func TestFollowReadyzFromItsBatches(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("batches-a")
	createInstallation(t, l, dir, id)
	f := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--metrics", "127.0.0.1:0", "--ready-lag", "1h", "--log-format", "json")
	addr := f.metricsAddr(t)
	enqueueFor(t, l, id, "after", 3)
	last, err := l.LastSeq(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "the read model to apply the 3 events", func() bool { return checkpointOf(t, dir, id) == last })

	code, body := get(t, addr, "/readyz")
	var r followReady
	if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.ReadModels) != 1 {
		t.Fatalf("/readyz body: %v: %s", err, body)
	}
	if st := r.ReadModels[0]; code != http.StatusOK || st.Checkpoint != last || st.HeldUntilSecondsAgo <= 0 {
		t.Fatalf("/readyz after applying events: %d %s; want 200 at %d, held until its last event", code, body, last)
	}
	if c := f.stop(); c != exitInterrupted {
		t.Fatalf("follow exited %d: %s", c, f.stderr.String())
	}
}
