package eventlog

import (
	"context"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// TestOpenAcrossLeaderKill opens a read-only Log (as every replayer
// command but demo does) right after the node leading the key bucket, or
// the event stream, was killed (SIGKILL) on a 3-node cluster: the two
// others elect a new leader within seconds, and Open must then succeed,
// within its request timeout. Until 2026-12-08 Open asked each of its
// requests once: the one the dead leader left unanswered waited out the
// whole timeout and Open failed with "open key bucket EPOCHLOG_KEYS:
// context deadline exceeded", every command with it, although the
// cluster answered again within the Raft election.
func TestOpenAcrossLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	c := natstest.StartProcessCluster(t, 3)
	ring := keyring(t, 1, 0x31)
	l := openLog(t, clusterConfig(c.URL()), ring)
	if _, err := l.Append(context.Background(), 0, msg(group(instA, "open"), 1, "1")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, stream := range []string{kvStreamName(keyBucket(DefaultStream)), DefaultStream} {
		t.Run(stream, func(t *testing.T) {
			leader := c.StreamLeader(stream)
			leader.Kill()
			defer func() {
				leader.Start()
				c.WaitStreamCurrent(stream)
			}()
			cfg := clusterConfig(c.URL())
			cfg.Replicas, cfg.ReadOnly = 0, true
			cfg.RequestTimeout = 30 * time.Second
			start := time.Now()
			ro, err := Open(context.Background(), cfg, ring)
			if err != nil {
				t.Fatalf("open %v after the leader of %s (%s) was killed: %v", time.Since(start).Round(time.Millisecond), stream, leader.Name(), err)
			}
			defer ro.Close()
			t.Logf("opened %v after the leader of %s (%s) was killed", time.Since(start).Round(time.Millisecond), stream, leader.Name())
			if recs := readAll(t, ro, instA, 0); len(recs) != 1 {
				t.Fatalf("read %d events, want 1", len(recs))
			}
		})
	}
}

// TestReadAcrossKeyBucketLeaderKill reads an installation's events, on a
// Log opened before, right after the node leading the key bucket was
// killed (SIGKILL) on a 3-node cluster: the data keys the events are
// sealed under are not cached yet, so each is fetched from the bucket,
// which has no leader until the two other nodes elect one within seconds.
// The read must carry on. Until 2026-12-08 the bucket's get was asked
// once: the read failed at once with "key bucket EPOCHLOG_KEYS: get ...:
// JetStream system temporarily unavailable" (status 503), or after the
// request timeout, and a rebuild or verify with it.
func TestReadAcrossKeyBucketLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	c := natstest.StartProcessCluster(t, 3)
	ring := keyring(t, 1, 0x32)
	l := openLog(t, clusterConfig(c.URL()), ring)
	for pos := uint64(1); pos <= 3; pos++ {
		if _, err := l.Append(context.Background(), pos-1, msg(group(instA, "keys"), pos, "x")); err != nil {
			t.Fatal(err)
		}
	}
	ro, leader := readerOnceLeaderKilled(t, c, ring, kvStreamName(keyBucket(DefaultStream)))
	start := time.Now()
	n := 0
	err := ro.Read(context.Background(), instA, 0, func(Record) error { n++; return nil })
	if err != nil {
		t.Fatalf("read %v after the key bucket's leader %s was killed: %v", time.Since(start).Round(time.Millisecond), leader.Name(), err)
	}
	t.Logf("read %d events %v after the key bucket's leader %s was killed", n, time.Since(start).Round(time.Millisecond), leader.Name())
	if n != 3 {
		t.Fatalf("read %d events, want 3", n)
	}
}

// TestActiveStreamAcrossMetaBucketLeaderKill reads the active-stream
// pointer (what replayer reseal reads first, and every command to warn
// of a switched stream) right after the node leading the metadata bucket
// was killed (SIGKILL) on a 3-node cluster. It must answer once the two
// others elect a leader. Until 2026-12-08 the bucket's lookup was asked
// once: reseal started within the election failed after the request
// timeout with "metadata bucket epochlog_meta: context deadline
// exceeded".
func TestActiveStreamAcrossMetaBucketLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	c := natstest.StartProcessCluster(t, 3)
	ring := keyring(t, 1, 0x33)
	l := openLog(t, clusterConfig(c.URL()), ring)
	if _, err := l.metaKV(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	ro, leader := readerOnceLeaderKilled(t, c, ring, kvStreamName(MetaBucket))
	start := time.Now()
	a, err := ro.ActiveStream(context.Background(), DefaultStream)
	if err != nil {
		t.Fatalf("active stream %v after the metadata bucket's leader %s was killed: %v", time.Since(start).Round(time.Millisecond), leader.Name(), err)
	}
	t.Logf("active stream %s, %v after the metadata bucket's leader %s was killed", a.Current.Stream, time.Since(start).Round(time.Millisecond), leader.Name())
	if a.Current.Stream != DefaultStream || a.Revision != 0 {
		t.Fatalf("active stream %+v, want the base with no pointer", a)
	}
}

// readerOnceLeaderKilled opens a read-only Log (request timeout 30 s) on
// a node that does not lead bucket (a bucket's stream), the event stream
// moved to that node too, then kills bucket's leader (SIGKILL) and
// returns the Log and the killed node: what the Log asks next meets the
// bucket without a leader, not a reconnection or an event stream without
// one.
func readerOnceLeaderKilled(t *testing.T, c *natstest.ProcessCluster, ring *events.Keyring, bucket string) (*Log, *natstest.Process) {
	t.Helper()
	c.WaitStreamCurrent(bucket)
	leader := c.StreamLeader(bucket)
	var other *natstest.Process
	for _, p := range c.Nodes() {
		if p != leader {
			other = p
		}
	}
	c.StepDownStream(DefaultStream, other)
	cfg := clusterConfig(other.URL())
	cfg.Replicas, cfg.ReadOnly = 0, true
	cfg.RequestTimeout = 30 * time.Second
	ro := openLog(t, cfg, ring)
	leader.Kill()
	return ro, leader
}
