package eventlog

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// Durable before acknowledged: the embedded server syncs every write to
// disk before it acknowledges it, unless Config.NoSync says otherwise.

// The server's own account of the configuration it runs with: what its
// monitoring (/varz, jetstream.config.sync_always) reports, and what its
// JetStream layer hands every file store it opens.
func TestEmbeddedSyncAlwaysByDefault(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want bool
	}{
		{"default", Config{}, true},
		{"default in-process", Config{EmbeddedInProcess: true}, true},
		{"NoSync", Config{NoSync: true}, false},
		{"NoSync in-process", Config{NoSync: true, EmbeddedInProcess: true}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.DataDir = t.TempDir()
			l := openLog(t, c.cfg, keyring(t, 1, 0x11))
			v, err := l.srv.Varz(nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.JetStream.Config == nil {
				t.Fatal("varz reports no JetStream configuration")
			}
			if got := v.JetStream.Config.SyncAlways; got != c.want {
				t.Errorf("varz jetstream.config.sync_always = %v, want %v", got, c.want)
			}
			if got := l.srv.JetStreamConfig().SyncAlways; got != c.want {
				t.Errorf("JetStream config SyncAlways = %v, want %v", got, c.want)
			}
		})
	}
}

// syncProbeEnv, when set to a data directory, makes TestSyncProbeProcess
// the child of TestEmbeddedFsyncsEachAppend.
const syncProbeEnv = "EPOCHLOG_TEST_SYNC_PROBE"

// TestSyncProbeProcess is not a test of its own: run as a child process
// (under strace), it opens the log on a data directory (with NoSync if
// $EPOCHLOG_TEST_SYNC_PROBE_NOSYNC is true), makes
// $EPOCHLOG_TEST_SYNC_PROBE_SINGLE single-event appends and one append of
// $EPOCHLOG_TEST_SYNC_PROBE_BATCH events (an atomic batch), and closes it.
func TestSyncProbeProcess(t *testing.T) {
	dir := os.Getenv(syncProbeEnv)
	if dir == "" {
		t.Skip("child process of TestEmbeddedFsyncsEachAppend")
	}
	noSync, _ := strconv.ParseBool(os.Getenv(syncProbeEnv + "_NOSYNC"))
	single, _ := strconv.Atoi(os.Getenv(syncProbeEnv + "_SINGLE"))
	batch, _ := strconv.Atoi(os.Getenv(syncProbeEnv + "_BATCH"))
	l := openLog(t, Config{DataDir: dir, EmbeddedInProcess: true, NoSync: noSync}, keyring(t, 1, 0x11))
	for i := range single {
		mustAppend(t, l, uint64(i), msg(group(instA, "singles"), uint64(i+1), fmt.Sprint(i)))
	}
	if batch > 0 {
		evs := make([]events.Event, batch)
		for i := range evs {
			evs[i] = msg(group(instA, "batch"), uint64(i+1), fmt.Sprint(i))
		}
		mustAppend(t, l, 0, evs...)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// fsyncCall is an fsync(2) or fdatasync(2) line of `strace -f`.
var fsyncCall = regexp.MustCompile(`(?m)^\d+ +f(data)?sync\(`)

// The system calls themselves, counted with strace on a child process:
// with the default every acknowledged single-event append has had its
// fsync, an atomic batch of many events is synced as a whole, and with
// NoSync the appends go without any.
func TestEmbeddedFsyncsEachAppend(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes under strace")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed: the fsync calls cannot be counted (TestEmbeddedSyncAlwaysByDefault still checks the server's configuration)")
	}
	const n = 20
	count := func(noSync bool, single, batch int) int {
		t.Helper()
		out := filepath.Join(t.TempDir(), "strace.txt")
		cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", out,
			os.Args[0], "-test.run=^TestSyncProbeProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), syncProbeEnv+"="+t.TempDir(),
			fmt.Sprintf("%s_NOSYNC=%v", syncProbeEnv, noSync),
			fmt.Sprintf("%s_SINGLE=%d", syncProbeEnv, single),
			fmt.Sprintf("%s_BATCH=%d", syncProbeEnv, batch))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if b, err := cmd.Output(); err != nil {
			if bytes.Contains(stderr.Bytes(), []byte("ptrace")) {
				t.Skipf("strace cannot trace here: %s", stderr.Bytes())
			}
			t.Fatalf("child under strace: %v\n%s%s", err, b, stderr.Bytes())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		c := len(fsyncCall.FindAllIndex(b, -1))
		t.Logf("NoSync=%v, %d single-event appends, a batch of %d: %d fsync calls", noSync, single, batch, c)
		return c
	}
	if c := count(false, n, 0); c < n {
		t.Errorf("default: %d fsync calls for %d acknowledged appends, want at least one each", c, n)
	}
	if c := count(false, 0, 5*n); c >= n {
		t.Errorf("default: %d fsync calls for one append of %d events, want the batch synced as a whole (fewer than %d)", c, 5*n, n)
	}
	if c := count(true, n, 0); c >= n/2 {
		t.Errorf("NoSync: %d fsync calls for %d appends, want (almost) none", c, n)
	}
}
