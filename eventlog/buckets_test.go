package eventlog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A key, retention or snapshots bucket that an operator created (or
// edited) to drop entries is refused to writers, naming the bucket and the
// setting (a reader opens it, logging the same at Error):
// a key bucket with a TTL would make every event sealed under an expired
// data key unreadable for good, with nothing said.
func TestBucketThatDropsEntriesRefused(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	open := func(stream string, ro bool) (*Log, error) {
		cfg := testConfig(srv)
		cfg.Stream, cfg.SubjectPrefix, cfg.ReadOnly = stream, strings.ToLower(stream), ro
		return Open(ctx, cfg, keyring(t, 1, 1))
	}
	refused := func(name string, err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrIncompatibleStream) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrIncompatibleStream naming %q", name, err, want)
		}
	}

	// The key bucket, checked at Open, writer and reader alike.
	for _, kc := range []jetstream.KeyValueConfig{
		{Bucket: "TTL_KEYS", TTL: time.Hour},
		{Bucket: "MEM_KEYS", Storage: jetstream.MemoryStorage},
	} {
		if _, err := js.CreateKeyValue(ctx, kc); err != nil {
			t.Fatal(err)
		}
		stream := strings.TrimSuffix(kc.Bucket, KeyBucketSuffix)
		if _, err := open(stream, false); err == nil {
			t.Errorf("%s: a writer opened the log", kc.Bucket)
		} else {
			refused(kc.Bucket, err, kc.Bucket)
		}
		// A reader changes nothing and may be what rescues the history
		// (a rebuild before the keys expire): it opens, and says why.
		cfg := testConfig(srv)
		cfg.Stream, cfg.SubjectPrefix, cfg.ReadOnly = stream, strings.ToLower(stream), true
		cfg, _, logged := observed(cfg)
		l, err := Open(ctx, cfg, keyring(t, 1, 1))
		if err != nil {
			t.Errorf("%s: a reader was refused: %v", kc.Bucket, err)
			continue
		}
		l.Close()
		if !strings.Contains(logged.String(), "would drop entries") || !strings.Contains(logged.String(), kc.Bucket) {
			t.Errorf("%s: a reader opened it without an error logged naming the bucket: %s", kc.Bucket, logged.String())
		}
	}

	// The retention and snapshots buckets, checked where they are used.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "RS" + RetentionBucketSuffix, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	l, err := open("RS", false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = l.marks(ctx, true)
	refused("retention bucket", err, "RS"+RetentionBucketSuffix)
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: l.SnapshotBucket(), TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	_, err = l.PutSnapshot(ctx, instA, 1, []byte("state"))
	refused("snapshots bucket", err, l.SnapshotBucket())
}

// The metadata bucket of the active-stream pointers with a TTL would send
// every process back to the base stream once the pointer expires: Open
// with ResolveActive refuses it.
func TestMetaBucketWithTTLRefused(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MetaBucket, TTL: time.Hour, History: 8}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(srv)
	cfg.ResolveActive = true
	l, err := Open(ctx, cfg, keyring(t, 1, 1))
	if err == nil {
		l.Close()
	}
	if !errors.Is(err, ErrIncompatibleStream) || !strings.Contains(err.Error(), MetaBucket) {
		t.Fatalf("open with a metadata bucket with a TTL: %v, want ErrIncompatibleStream naming %s", err, MetaBucket)
	}
}
