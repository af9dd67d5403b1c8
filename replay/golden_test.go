package replay_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The golden history: testdata/golden holds a stream written by the code
// of commit 17daec7 (2026-12-04; `replayer demo --installations 5 --groups 3
// --messages 30`: creates, Welcomes, commits with adds, removes and
// updates, messages, deliveries with expiries, one read model rekeyed),
// exported message by message with its headers, the keyring that sealed
// it (a test key, nothing else uses it) and the five read models that
// code projected from it. It is never re-recorded: it is how we know that
// streams written by earlier code still replay, whatever the event
// catalogue, the envelope or the schema becomes.
const goldenDir = "testdata/golden"

// goldenRecord is one exported stream message.
type goldenRecord struct {
	Seq     uint64              `json:"seq"`
	Subject string              `json:"subject"`
	Header  map[string][]string `json:"header"`
	Data    []byte              `json:"data"`
}

// TestGoldenStreamReplaysUnchanged imports the golden stream into a fresh
// server, rebuilds every installation's read model from it and requires:
// the same content (digest) as the read model the old code wrote (opened
// and migrated in place to today's schema, then caught up), the MLS history re-derived
// without a mismatch, and Verify of the old file against the stream.
func TestGoldenStreamReplaysUnchanged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ring := goldenKeyring(t)
	srv := natstest.Start(t, natstest.Options{})
	l := logtest.Open(t, logtest.Config(srv), ring)
	importGolden(ctx, t, l.Conn(), l.Stream())

	dbs, err := filepath.Glob(filepath.Join(goldenDir, "db", "*.db"))
	if err != nil || len(dbs) != 5 {
		t.Fatalf("golden read models: %v %v", dbs, err)
	}
	for _, golden := range dbs {
		inst := events.InstallationID(strings.TrimSuffix(filepath.Base(golden), ".db"))
		t.Run(string(inst), func(t *testing.T) {
			key := goldenDBKey(t, strings.TrimSuffix(golden, ".db")+".key")

			// The old file, migrated in place on a copy.
			old := filepath.Join(t.TempDir(), "old.db")
			copyFile(t, golden, old)
			odb, err := projections.Open(old, key, nil)
			if err != nil {
				t.Fatalf("open the golden read model with today's code: %v", err)
			}
			// The demo's last delivery events may postdate a read model's
			// last catch-up: today's code applies them on top.
			if _, _, err := replay.CatchUp(ctx, l, inst, odb, nil); err != nil {
				odb.Close()
				t.Fatalf("catch the golden read model up with today's code: %v", err)
			}
			want, err := odb.Digest(ctx)
			odb.Close()
			if err != nil {
				t.Fatal(err)
			}

			// A fresh rebuild from the imported stream (MLS re-derived).
			fresh := filepath.Join(t.TempDir(), "fresh.db")
			if _, err := replay.Rebuild(ctx, l, inst, fresh, key, nil); err != nil {
				t.Fatalf("rebuild from the golden stream: %v", err)
			}
			fdb, err := projections.OpenExisting(fresh, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := fdb.Digest(ctx)
			fdb.Close()
			if err != nil {
				t.Fatal(err)
			}
			if d := projections.Compare(want, got); d != nil {
				t.Fatalf("the golden stream replays to other content than the old code projected: %v", d)
			}
			if want.Schema != projections.LatestSchema {
				t.Fatalf("golden read model at schema %d after migration, want %d", want.Schema, projections.LatestSchema)
			}

			rep, err := replay.VerifyMLS(ctx, l, inst)
			if err != nil {
				t.Fatalf("VerifyMLS of the golden stream: %v", err)
			}
			if rep == nil {
				t.Fatal("VerifyMLS returned no report")
			}
			if _, err := replay.Verify(ctx, l, inst, old, key, nil); err != nil {
				t.Fatalf("Verify of the (migrated) golden read model: %v", err)
			}
		})
	}
}

// importGolden publishes the golden records in order into stream (created
// by the Log) and requires each to land at its recorded sequence: links
// between events name stream sequences.
func importGolden(ctx context.Context, t *testing.T, nc *nats.Conn, stream string) {
	t.Helper()
	f, err := os.Open(filepath.Join(goldenDir, "stream.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bufio.NewReader(zr))
	n := 0
	for {
		var r goldenRecord
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("golden stream record %d: %v", n+1, err)
		}
		m := nats.NewMsg(r.Subject)
		m.Data = r.Data
		// Only the deduplication id (which carries the event's position)
		// is part of the stored event; the expectations were the writer's.
		m.Header.Set(jetstream.MsgIDHeader, firstHeader(r.Header, jetstream.MsgIDHeader))
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("import seq %d: %v", r.Seq, err)
		}
		if ack.Stream != stream || ack.Sequence != r.Seq {
			t.Fatalf("import: record %d landed at %s/%d, want %s/%d", n+1, ack.Stream, ack.Sequence, stream, r.Seq)
		}
		n++
	}
	if n != 714 {
		t.Fatalf("imported %d golden records, want 714", n)
	}
}

func firstHeader(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// goldenKeyring reads testdata/golden/event.keys ("<id>:<64 hex>" lines).
func goldenKeyring(t *testing.T) *events.Keyring {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, "event.keys"))
	if err != nil {
		t.Fatal(err)
	}
	var ring *events.Keyring
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		idText, hx, ok := strings.Cut(line, ":")
		id, err := strconv.ParseUint(idText, 10, 32)
		raw, herr := hex.DecodeString(hx)
		if !ok || err != nil || herr != nil {
			t.Fatalf("golden keyring line %q", idText)
		}
		k, err := events.NewRootKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ring == nil {
			ring, err = events.NewKeyring(events.KeyID(id), k)
		} else {
			err = ring.Rotate(events.KeyID(id), k)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if ring == nil {
		t.Fatal("golden keyring is empty")
	}
	return ring
}

// goldenDBKey reads a read model's raw key file (64 hex digits).
func goldenDBKey(t *testing.T, path string) projections.Key {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	k, err := projections.RawKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
