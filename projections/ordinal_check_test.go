package projections

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// damageLastOrdinal writes v as group i's last_ordinal in the file at
// path, through the writer and its own transaction, as a damaged file
// would hold it.
func damageLastOrdinal(t *testing.T, path string, k Key, i int, v int64) {
	t.Helper()
	db := mustOpen(t, path, k, nil)
	if _, err := db.w.ExecContext(ctx, `UPDATE groups SET last_ordinal = ? WHERE group_id = ?`, v, gid(i)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// wantOrdinalBehind fails unless err is the damage of group i (last
// ordinal last, highest stored ordinal highest), named as such.
func wantOrdinalBehind(t *testing.T, what string, err error, i int, last, highest int64) {
	t.Helper()
	var oe *OrdinalError
	if !errors.Is(err, ErrOrdinalBehind) || !errors.Is(err, ErrCorrupt) || !errors.As(err, &oe) {
		t.Fatalf("%s: %v; want ErrOrdinalBehind (and ErrCorrupt) in an *OrdinalError", what, err)
	}
	if string(oe.Group) != string(gid(i)) || oe.Last != last || oe.Highest != highest {
		t.Fatalf("%s: group %x, last %d, highest %d; want %x, %d, %d", what, oe.Group, oe.Last, oe.Highest, gid(i), last, highest)
	}
	for _, s := range []string{fmt.Sprintf("group %x", gid(i)), fmt.Sprintf("last_ordinal %d", last), fmt.Sprintf("highest stored message ordinal %d", highest)} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("%s: %q does not say %q", what, err, s)
		}
	}
}

// A read model whose group's last_ordinal was damaged below the group's
// highest stored message ordinal (written into the real SQLCipher file)
// is named by the file's checks: CheckFile (what verify and rebuild run),
// IntegrityCheck and Open with CheckIntegrity, each naming the group and
// both ordinals, where an undamaged file checks out. The applier refuses
// the group's next message naming the same instead of failing on the
// primary key (or storing an ordinal out of order), applying nothing of
// the batch; a group without messages is not damaged by any value.
func TestLastOrdinalBelowTheStoredOnes(t *testing.T) {
	s := v12Stream() // group 1: ordinals 1 to 4; group 2: none
	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "damaged.db")
	db := build(t, path, k, nil, s.recs)
	cp, err := db.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(ctx, path, k, nil); err != nil {
		t.Fatalf("CheckFile of the undamaged file: %v", err)
	}

	damageLastOrdinal(t, path, k, 1, 2)
	damageLastOrdinal(t, path, k, 2, 0) // no message: nothing is below 0
	wantOrdinalBehind(t, "CheckFile", CheckFile(ctx, path, k, nil), 1, 2, 4)
	db = mustOpen(t, path, k, nil)
	wantOrdinalBehind(t, "IntegrityCheck", db.IntegrityCheck(ctx), 1, 2, 4)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(path, k, &Options{CheckIntegrity: true}); err == nil {
		db.Close()
		t.Fatal("Open with CheckIntegrity opened the damaged file")
	} else {
		wantOrdinalBehind(t, "Open with CheckIntegrity", err, 1, 2, 4)
	}

	db = mustOpen(t, path, k, nil)
	defer db.Close()
	s.recs = nil
	s.received(1, 4, 3)
	err = db.Apply(ctx, s.recs)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Seq != s.recs[0].Seq {
		t.Fatalf("apply of the group's next message: %v; want an *ApplyError at stream sequence %d", err, s.recs[0].Seq)
	}
	wantOrdinalBehind(t, "apply", err, 1, 2, 4)
	if strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("apply: %v; want the damage named, not the primary key's failure", err)
	}
	if got, err := db.Checkpoint(ctx); err != nil || got != cp {
		t.Fatalf("checkpoint %d, %v after the refusal; want %d", got, err, cp)
	}
	if last, _, ords := groupOrdinals(t, db, 1); last != 2 || len(ords) != 4 {
		t.Fatalf("after the refusal: last_ordinal %d, %d messages; want 2 and 4 (nothing applied)", last, len(ords))
	}
}

// Several damaged groups: the checks name the first by id and count the
// others.
func TestLastOrdinalBelowInSeveralGroups(t *testing.T) {
	s := v12Stream()
	for n := range 2 { // group 2: ordinals 1 and 2, sent at epoch 0
		s.group(2, events.ApplicationMessageSent{GroupID: gid(2), Epoch: 0, SenderLeaf: 0, Sender: events.InstallationID(s.inst),
			MessageID: fmt.Appendf(nil, "g2-%d", n), Content: events.NewSecret(fmt.Appendf(nil, "hello %d", n))})
	}
	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "damaged.db")
	if err := build(t, path, k, nil, s.recs).Close(); err != nil {
		t.Fatal(err)
	}
	damageLastOrdinal(t, path, k, 1, 3)
	damageLastOrdinal(t, path, k, 2, 1)
	err := CheckFile(ctx, path, k, nil)
	wantOrdinalBehind(t, "CheckFile", err, 1, 3, 4)
	var oe *OrdinalError
	if errors.As(err, &oe); oe.More != 1 || !strings.Contains(err.Error(), "and 1 more group") {
		t.Fatalf("CheckFile: %v (%d more); want 1 more group counted", err, oe.More)
	}
}
