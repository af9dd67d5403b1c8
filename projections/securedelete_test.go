package projections

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// decryptedPages decrypts every page of a SQLCipher 4 file opened with
// a raw key (x'..', no KDF: the key is the AES-256 key; each page ends in
// a 16-byte IV and a 64-byte HMAC, and page 1 starts with the salt), so a
// test can look at what the file holds, free pages included.
func decryptedPages(t *testing.T, path string, raw []byte) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		t.Fatal(err)
	}
	const reserve = 16 + 64
	var out []byte
	for off := 0; off+PageSize <= len(data); off += PageSize {
		page := data[off : off+PageSize]
		start := 0
		if off == 0 {
			start = 16 // the salt
		}
		ct := page[start : PageSize-reserve]
		iv := page[PageSize-reserve : PageSize-reserve+16]
		pt := make([]byte, len(ct))
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
		out = append(out, pt...)
	}
	return out
}

// A message the read model deletes (retention) must not stay in the
// file's free pages or freed cells: secure_delete, which forward-secrecy.md
// and read-model.md promise, overwrites it.
func TestDeletedMessagesLeaveNoTraceInFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ro.db")
	k := newKey(t)
	db := mustOpen(t, path, k, nil)
	s := newStream("inst-sd")
	s.installation()
	s.group(0, events.GroupCreated{GroupID: gid(0), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("state-0-0"))})
	s.group(0, events.MemberAdded{GroupID: gid(0), Epoch: 0, Leaf: 0, Identity: []byte("inst-sd")})
	const marker = "SECRET-PLAINTEXT-MARKER-"
	for i := 0; i < 50; i++ {
		s.group(0, events.ApplicationMessageSent{GroupID: gid(0), Epoch: 0, Sender: s.inst,
			MessageID: []byte(fmt.Sprintf("m-%d", i)), Content: events.NewSecret([]byte(fmt.Sprintf("%s%04d", marker, i) + string(bytes.Repeat([]byte{'x'}, 200))))})
	}
	// The state after them, or retention keeps them (a reload needs them).
	s.group(0, events.StateRecorded{GroupID: gid(0), Epoch: 0, State: events.NewSecret([]byte("state-0-r"))})
	if err := db.Apply(ctx, s.recs); err != nil {
		t.Fatal(err)
	}
	// Checkpoint the WAL so the messages reach the database file itself.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(decryptedPages(t, path, k.bytes()), []byte(marker)) {
		t.Fatal("the messages are not in the decrypted file: the test cannot see what it looks for")
	}
	db = mustOpen(t, path, k, nil)
	n, err := db.DeleteMessagesBefore(ctx, time.Now().Add(24*time.Hour))
	if err != nil || n != 50 {
		t.Fatalf("DeleteMessagesBefore = %d, %v; want 50", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(decryptedPages(t, path, k.bytes()), []byte(marker)); i >= 0 {
		t.Fatalf("a deleted message's plaintext is still in the database file (decrypted offset %d): secure_delete is off", i)
	}
}
