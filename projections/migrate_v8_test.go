package projections

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// v8Stream holds commits of every kind of committer: this installation's
// (own), another member's, and, as written before schema 3, one whose
// committer is not recorded; in current and ended memberships, and by
// external commit.
func v8Stream(t *testing.T) []Record {
	t.Helper()
	s := newStream("inst-a")
	s.mlsSizes = true
	buildSample(s, 2, 10)
	v3Extras(s, 950)
	externalJoins(s, 951)
	removedFromGroup(s, 952)
	s.group(960, events.WelcomeProcessed{GroupID: gid(960), Epoch: 2, KeyPackageRef: kref(1), Welcome: []byte("w"),
		EpochAuthenticator: []byte("a-2"), State: events.NewSecret([]byte("s-2")),
		Members: []events.Member{{Leaf: 0, Identity: []byte("peer")}, {Leaf: 1, Identity: []byte(s.inst)}}})
	for i, who := range []string{"own", "peer", "unknown", "peer", "own", "peer"} {
		e := uint64(3 + i)
		var c *events.Committer
		switch who {
		case "own":
			c = &events.Committer{Leaf: 1, Identity: []byte(s.inst), Own: true}
		case "peer":
			c = &events.Committer{Leaf: 0, Identity: []byte("peer")}
		}
		s.group(960, events.CommitApplied{GroupID: gid(960), Epoch: e, EpochAuthenticator: fmt.Appendf(nil, "a-%d", e),
			ConfirmedTranscriptHash: fmt.Appendf(nil, "c-%d", e), Commit: bytes.Repeat(fmt.Appendf(nil, "commit-%d-", e), 2000),
			State: events.NewSecret([]byte(fmt.Sprintf("s-%d", e))), Committer: c})
	}
	return s.recs
}

// groupEpoch names an epoch of a group.
type groupEpoch struct {
	group string
	epoch uint64
}

// startedBy lists the commits of recs by the group and epoch they started.
func startedBy(recs []Record) map[groupEpoch][]byte {
	commits := map[groupEpoch][]byte{}
	for _, r := range recs {
		switch b := r.Event.Body.(type) {
		case events.CommitApplied:
			commits[groupEpoch{string(b.GroupID), b.Epoch}] = b.Commit
		case events.ExternalJoined:
			commits[groupEpoch{string(b.GroupID), b.Epoch}] = b.Commit
		}
	}
	return commits
}

// A v7 read model migrated in place to v8 holds what a fresh v8 build of
// the same events holds: of another member's commit its SHA-256 alone,
// of an own commit and of one whose committer is not recorded the
// message and its SHA-256, in the epochs of current and ended
// memberships. Both answer CommitStartedEpoch as a v7 build does.
func TestMigrateToV8InPlace(t *testing.T) {
	recs := v8Stream(t)
	dir := t.TempDir()
	v8 := &Options{SchemaVersion: 8}
	fresh := build(t, filepath.Join(dir, "v8.db"), newKey(t), v8, recs)
	defer fresh.Close()
	want, err := fresh.Digest(ctx)
	if err != nil || want.Schema != 8 {
		t.Fatalf("fresh build at schema %d, %v", want.Schema, err)
	}
	v7 := build(t, filepath.Join(dir, "v7.db"), newKey(t), &Options{SchemaVersion: 7}, recs)
	defer v7.Close()
	k := newKey(t)
	path := filepath.Join(dir, "migrated.db")
	old := build(t, path, k, &Options{SchemaVersion: 7}, recs)
	old.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, v8); err != nil || f != 7 || to != 8 {
		t.Fatalf("MigrateInPlace from v7: %d -> %d, %v", f, to, err)
	}
	migrated := mustOpen(t, path, k, &Options{NoMigrate: true})
	defer migrated.Close()
	got, err := migrated.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("v7 migrated in place differs from a fresh v8 build: %v", d)
	}
	if err := migrated.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}

	commits := startedBy(recs)
	for name, db := range map[string]*DB{"fresh": fresh, "migrated": migrated} {
		kept := map[string]int{}
		for _, table := range []string{"epochs", "past_epochs"} {
			rows, err := db.sql.QueryContext(ctx, `SELECT group_id, epoch, own_commit, commit_sha256, commit_message FROM `+table)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var g []byte
				var epoch uint64
				var own *int64
				var sum, msg []byte
				if err := rows.Scan(&g, &epoch, &own, &sum, &msg); err != nil {
					t.Fatal(err)
				}
				commit, ok := commits[groupEpoch{string(g), epoch}]
				switch {
				case !ok:
					if sum != nil || msg != nil {
						t.Fatalf("%s: %s %s/%d, started by no commit, holds a commit or its hash", name, table, g, epoch)
					}
					continue
				case !bytes.Equal(sum, sha256Of(commit)):
					t.Fatalf("%s: %s %s/%d: commit_sha256 %x is not the SHA-256 of its commit", name, table, g, epoch, sum)
				case own != nil && *own == 0:
					if msg != nil {
						t.Fatalf("%s: %s %s/%d keeps another member's commit whole", name, table, g, epoch)
					}
					kept["peer "+table]++
				default:
					if !bytes.Equal(msg, commit) {
						t.Fatalf("%s: %s %s/%d (own_commit %v) lost its commit", name, table, g, epoch, own)
					}
					if own == nil {
						kept["unknown"]++
					} else {
						kept["own"]++
					}
				}
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}
		}
		// The stream has each kind, or the checks above proved nothing.
		for _, kind := range []string{"peer epochs", "peer past_epochs", "own", "unknown"} {
			if kept[kind] == 0 {
				t.Fatalf("%s: no %s commit checked (%v)", name, kind, kept)
			}
		}
	}

	for key, commit := range commits {
		g, epoch := []byte(key.group), key.epoch
		other := append(bytes.Clone(commit), 'x')
		for name, db := range map[string]*DB{"v7": v7, "fresh": fresh, "migrated": migrated} {
			if ok, err := db.CommitStartedEpoch(ctx, g, epoch, commit); err != nil || !ok {
				t.Fatalf("%s: the commit that started %s/%d is not recognised: %v, %v", name, g, epoch, ok, err)
			}
			if ok, err := db.CommitStartedEpoch(ctx, g, epoch, other); err != nil || ok {
				t.Fatalf("%s: another commit is taken for the one that started %s/%d: %v, %v", name, g, epoch, ok, err)
			}
			if ok, err := db.CommitStartedEpoch(ctx, g, epoch+100, commit); err != nil || ok {
				t.Fatalf("%s: the commit that started %s/%d is taken for one of another epoch: %v, %v", name, g, epoch, ok, err)
			}
		}
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// Processes that open one older file at once (a rolling upgrade) all
// open it: the first migrates it, the others wait for its write lock and
// find the step done, where they used to fail it (the v8 step's column
// added twice) or, for some steps, do it again.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	recs := v8Stream(t)
	fresh := build(t, filepath.Join(t.TempDir(), "fresh.db"), newKey(t), nil, recs)
	want, err := fresh.Digest(ctx)
	fresh.Close()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		k := newKey(t)
		path := filepath.Join(t.TempDir(), "v6.db")
		build(t, path, k, &Options{SchemaVersion: 6}, recs).Close()
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				db, err := Open(path, k, nil)
				if err == nil {
					err = db.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: open %d of 3 at once: %v", round, i, err)
			}
		}
		db := mustOpen(t, path, k, &Options{NoMigrate: true})
		got, err := db.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := Compare(want, got); d != nil {
			t.Fatalf("round %d: migrated by three opens at once, the file differs from a fresh build: %v", round, d)
		}
		if err := db.IntegrityCheck(ctx); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

// TestMigrationWaitsForAnotherWriter holds the write lock of a v7 file in
// one connection, as a process migrating it would, while another opens
// the file: the opener waits past its BusyTimeout for as long as
// MigrationWait allows, migrates once the lock is released, and, when
// MigrationWait runs out first, fails with ErrMigrationWait naming the
// file and leaves it at v7.
func TestMigrationWaitsForAnotherWriter(t *testing.T) {
	recs := v8Stream(t)
	k := newKey(t)
	path := filepath.Join(t.TempDir(), "v7.db")
	build(t, path, k, &Options{SchemaVersion: 7}, recs).Close()

	holder := mustOpen(t, path, k, &Options{NoMigrate: true})
	defer holder.Close()
	hold := func() (release func()) {
		conn, err := holder.w.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM epochlog_meta WHERE 0`); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := tx.Commit(); err != nil {
				t.Error(err)
			}
			conn.Close()
		}
	}

	// Given up: the lock outlasts MigrationWait.
	release := hold()
	_, err := Open(path, k, &Options{BusyTimeout: 50 * time.Millisecond, MigrationWait: 300 * time.Millisecond})
	release()
	var fe *FileError
	if !errors.Is(err, ErrMigrationWait) || !errors.As(err, &fe) || fe.Path != path {
		t.Fatalf("open while another connection holds the write lock: %v, want ErrMigrationWait naming %s", err, path)
	}
	if _, v, _ := schemaOf(t, path, k); v != 7 {
		t.Fatalf("after the wait gave up the file is at schema %d, want 7", v)
	}

	// Waited out: the lock is released after several BusyTimeouts.
	release = hold()
	done := make(chan error, 1)
	go func() {
		db, err := Open(path, k, &Options{BusyTimeout: 50 * time.Millisecond})
		if err == nil {
			err = db.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		release()
		t.Fatalf("open returned while the write lock was held (%v); want it to wait", err)
	case <-time.After(time.Second): // 20 BusyTimeouts
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("open after the write lock was released: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("open still waiting a minute after the write lock was released")
	}
	if _, v, _ := schemaOf(t, path, k); v != LatestSchema {
		t.Fatalf("after the wait the file is at schema %d, want %d", v, LatestSchema)
	}
}
