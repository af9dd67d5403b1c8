package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats-server/v2/server"
)

// startLimited starts a JetStream server from conf (a nats-server
// configuration; %s is its store directory) and returns its client URL.
func startLimited(t *testing.T, conf string) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(conf, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// When a storage limit of the server or of the account is reached in the
// middle of an atomic batch, nats-server 2.15 stores the batch's first
// events and not the rest, and answers with an error (server limit) or not
// at all (account limit). Append, and a retry of the same events, must say
// so (ErrPartialBatch, naming the stored sequences), never that the append
// failed whole or that another writer won (ErrConflict).
func TestPartialBatchIsReported(t *testing.T) {
	for _, tc := range []struct{ name, conf, user string }{
		{"server limit", "listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q, max_file_store: 65536 }\n", ""},
		{"account limit", "listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\naccounts { A { jetstream { max_file: 65536, max_mem: 0 }, users [{user: a, password: a}] } }\n", "a"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			cfg := Config{NATSURL: startLimited(t, tc.conf), RequestTimeout: 2 * time.Second}
			if tc.user != "" {
				cfg.User, cfg.Password = tc.user, NewSecret(tc.user)
			}
			l := openLog(t, cfg, keyring(t, 1, 1))
			ctx := context.Background()
			a := group(instA, "g")
			big := strings.Repeat("x", 8<<10)
			var p uint64
			var err error
			var batch []events.Event
			for range 20 {
				batch = []events.Event{msg(a, p+1, big), msg(a, p+2, big), msg(a, p+3, big)}
				if _, err = l.Append(ctx, p, batch...); err != nil {
					break
				}
				p += 3
			}
			if err == nil {
				t.Fatal("the storage limit was never reached")
			}
			if stored := streamMsgs(t, l); stored == p {
				t.Skipf("the server refused the batch whole (%v): nothing to report", err)
			}
			if Unanswered(err) {
				// Unanswered: the caller appends the same events again.
				_, err = l.Append(ctx, p, batch...)
			}
			if !errors.Is(err, ErrPartialBatch) || errors.Is(err, ErrConflict) {
				t.Fatalf("append of a batch the server stored in part: %v, want ErrPartialBatch", err)
			}
			t.Logf("reported: %v", err)
		})
	}
}

// A single-event append refused for want of room, by the server's
// storage limit, the account's or the stream's own max_bytes (discard
// new), fails with ErrStreamFull naming the stream and the limit: an
// answer, not a lost one (Unanswered does not hold), so a caller does not
// send it again for nothing.
func TestStoreLimitIsStreamFull(t *testing.T) {
	for _, tc := range []struct{ name, conf, user, limit string }{
		{"server limit", "listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q, max_file_store: 65536 }\n", "", "max_file_store"},
		{"account limit", "listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\naccounts { A { jetstream { max_file: 65536, max_mem: 0 }, users [{user: a, password: a}] } }\n", "a", "storage limit"},
		{"stream max_bytes", "listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\n", "", "max_bytes"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			cfg := Config{NATSURL: startLimited(t, tc.conf), RequestTimeout: 2 * time.Second}
			if tc.user != "" {
				cfg.User, cfg.Password = tc.user, NewSecret(tc.user)
			}
			if tc.limit == "max_bytes" {
				cfg.MaxBytes = 65536
			}
			l := openLog(t, cfg, keyring(t, 1, 1))
			a := group(instA, "g")
			big := strings.Repeat("x", 8<<10)
			var err error
			for p := uint64(0); p < 40 && err == nil; p++ {
				_, err = l.Append(context.Background(), p, msg(a, p+1, big))
			}
			if !errors.Is(err, ErrStreamFull) || Unanswered(err) || !strings.Contains(err.Error(), tc.limit) || !strings.Contains(err.Error(), l.Stream()) {
				t.Fatalf("append beyond the %s: %v; want ErrStreamFull naming the stream and %q", tc.name, err, tc.limit)
			}
		})
	}
}
