package replay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/projections"
)

// A read model whose group's last_ordinal was lowered below the group's
// highest stored message ordinal (written into the SQLCipher file with
// its key) fails Verify naming the group (hex) and both ordinals, as a
// verification failure, not as drift of some row; a rebuild replaces it
// as damaged (keeping it beside), and the rebuilt file verifies.
func TestVerifyNamesALastOrdinalBehind(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 90)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x5A)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	rawHex := strings.Repeat("5a", projections.KeySize)
	db := sqlOpen(t, live, rawHex)
	var highest int64
	if err := db.QueryRow(`SELECT max(ordinal) FROM messages WHERE group_id = ?`, genGroupID(1)).Scan(&highest); err != nil || highest < 2 {
		t.Fatalf("group 1's highest ordinal %d, %v; want a few messages", highest, err)
	}
	if _, err := db.Exec(`UPDATE groups SET last_ordinal = 1 WHERE group_id = ?`, genGroupID(1)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err := Verify(ctx, l, instA, live, key, testReplayOptions())
	var oe *projections.OrdinalError
	if !errors.Is(err, projections.ErrOrdinalBehind) || !errors.As(err, &oe) || !IsVerificationFailure(err) {
		t.Fatalf("verify of a file whose last_ordinal is behind: %v; want ErrOrdinalBehind, a verification failure", err)
	}
	want := fmt.Sprintf("group %s: last_ordinal 1 is below its highest stored message ordinal %d", hex.EncodeToString(genGroupID(1)), highest)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), live) {
		t.Fatalf("verify: %v; want it to name the file and say %q", err, want)
	}
	noLeftovers(t, live)

	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || !res.Recovered || res.KeptDamaged == "" {
		t.Fatalf("rebuild of the file: %+v, %v; want it recovered, the damaged file kept", res, err)
	}
	if _, err := Verify(ctx, l, instA, live, key, testReplayOptions()); err != nil {
		t.Fatalf("verify after the rebuild: %v", err)
	}
}
