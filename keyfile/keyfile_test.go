package keyfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

func rootKey(t *testing.T, b byte) events.RootKey {
	t.Helper()
	k, err := events.NewRootKey(bytes.Repeat([]byte{b}, events.RootKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeyringRoundTrip: a ring saved and loaded again holds the same keys
// under the same ids with the same current key, so events sealed under the
// saved ring open under the loaded one.
func TestKeyringRoundTrip(t *testing.T) {
	ring, err := events.NewKeyring(3, rootKey(t, 0x33))
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Add(1, rootKey(t, 0x11)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "event.keys")
	if err := SaveKeyring(path, ring); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if st.IsDir() {
			want = 0o700
		}
		if st.Mode().Perm() != want {
			t.Fatalf("%s: mode %04o, want %04o", p, st.Mode().Perm(), want)
		}
	}
	got, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Current() != 3 || len(got.IDs()) != 2 {
		t.Fatalf("loaded %v, want current 3 and keys 1 and 3", got)
	}
	for _, id := range ring.IDs() {
		want, _ := ring.RootKey(id)
		k, ok := got.RootKey(id)
		if !ok || !k.Equal(want) {
			t.Fatalf("key id %d: loaded ok=%v, equal=%v", id, ok, k.Equal(want))
		}
	}
	if _, ok := got.RootKey(2); ok {
		t.Fatal("RootKey(2) found a key the ring does not hold")
	}
	b := events.Binding{Stream: "S", Subject: "s.x"}
	ev := events.Event{Aggregate: events.Aggregate{Installation: "alice", Type: events.AggInstallation}, Position: 1,
		Time: time.Unix(1700000000, 0), Body: &events.InstallationCreated{Installation: "alice", Ciphersuite: 1}}
	env, err := events.Seal(ring, b, ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Open(got, "alice", b, env); err != nil {
		t.Fatalf("an event sealed under the saved ring does not open under the loaded one: %v", err)
	}
	// Saving again replaces the file whole.
	if err := ring.Rotate(4, rootKey(t, 0x44)); err != nil {
		t.Fatal(err)
	}
	if err := SaveKeyring(path, ring); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKeyring(path); err != nil || got.Current() != 4 || len(got.IDs()) != 3 {
		t.Fatalf("after a second save: %v, %v", got, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("%d files beside the keyring, want none", len(ents)-1)
	}
}

// TestSaveKeyringRefusesLowerCurrent: the file format makes the highest id
// current, so a ring whose current key is an older one is not written (it
// would come back sealing with another key).
func TestSaveKeyringRefusesLowerCurrent(t *testing.T) {
	ring, err := events.NewKeyring(1, rootKey(t, 0x11))
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Add(2, rootKey(t, 0x22)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "event.keys")
	err = SaveKeyring(path, ring)
	if err == nil || !strings.Contains(err.Error(), "current key is id 1, not its highest id 2") {
		t.Fatalf("SaveKeyring with current 1 of 1,2: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused save left a file: %v", err)
	}
}

// TestLoadRefusesLooseModes: a keyring, key or passphrase file that others
// can access is refused with an error naming the file and its mode.
func TestLoadRefusesLooseModes(t *testing.T) {
	dir := t.TempDir()
	loaders := privateFiles(t, dir)
	for path, load := range loaders {
		if err := load(path); err != nil {
			t.Fatalf("%s at 0600: %v", path, err)
		}
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		err := load(path)
		var pe *PermissionError
		if !errors.As(err, &pe) || !errors.Is(err, ErrNotPrivate) || pe.Path != path || pe.Mode != 0o640 {
			t.Fatalf("%s at 0640: %v, want a *PermissionError", path, err)
		}
		if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "mode 0640") {
			t.Fatalf("error %q does not name the file and its mode", msg)
		}
	}
}

// TestDBKeyFiles: a key file written by NewDBKeyFile or SaveDBKey loads as
// the same key; malformed files are refused without echoing their content.
func TestDBKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "a.key")
	k, err := NewDBKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadDBKey(path)
	if err != nil || !got.Equal(k) {
		t.Fatalf("LoadDBKey: equal %v, %v", got.Equal(k), err)
	}
	raw := bytes.Repeat([]byte{7}, projections.KeySize)
	k2, err := SaveDBKey(path, raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err = LoadDBKey(path)
	if err != nil || !got.Equal(k2) || got.Equal(k) {
		t.Fatalf("after SaveDBKey over it: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != strings.Repeat("07", 32)+"\n" {
		t.Fatalf("key file holds %d bytes, want 64 hex digits and a newline", len(b))
	}
	// The key opens a read model written under the same raw key.
	db, err := projections.Open(filepath.Join(dir, "a.db"), k2, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := projections.OpenExisting(filepath.Join(dir, "a.db"), got, nil); err != nil {
		t.Fatalf("the loaded key does not open the read model: %v", err)
	} else {
		db.Close()
	}

	secret := strings.Repeat("zz", 32)
	for name, content := range map[string]string{
		"short":  "abcd\n",
		"notHex": secret + "\n",
	} {
		p := filepath.Join(dir, name+".key")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadDBKey(p)
		if err == nil || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "abcd") || strings.Contains(err.Error(), secret) {
			t.Fatalf("%s: %v, want an error naming the file and not its content", name, err)
		}
	}
	if _, err := SaveDBKey(filepath.Join(dir, "b.key"), []byte{1, 2}); err == nil {
		t.Fatal("SaveDBKey took a 2-byte key")
	}
	empty := filepath.Join(dir, "empty.pass")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDBPassphrase(empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("an empty passphrase file: %v", err)
	}
}

// TestCreateKeyringNeverReplaces: CreateKeyring creates a one-key ring
// once and leaves an existing file alone.
func TestCreateKeyringNeverReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "event.keys")
	created, err := CreateKeyring(path)
	if err != nil || !created {
		t.Fatalf("CreateKeyring: %v, %v", created, err)
	}
	before, _ := os.ReadFile(path)
	ring, err := LoadKeyring(path)
	if err != nil || ring.Current() != 1 || len(ring.IDs()) != 1 {
		t.Fatalf("created keyring: %v, %v", ring, err)
	}
	if created, err := CreateKeyring(path); err != nil || created {
		t.Fatalf("CreateKeyring on an existing file: %v, %v", created, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("an existing keyring was replaced")
	}
}

// TestParseKeyringErrorsHideContent: a malformed entry is named by its
// position, never shown.
func TestParseKeyringErrorsHideContent(t *testing.T) {
	secret := strings.Repeat("ab", 31) + "zz"
	for _, text := range []string{
		"", "# only a comment\n",
		"1:" + secret,
		"1:" + strings.Repeat("ab", 32) + ",2" + secret,
		"0:" + strings.Repeat("ab", 32),
		"1:" + strings.Repeat("ab", 32) + "\n1:" + strings.Repeat("cd", 32),
	} {
		_, err := ParseKeyring(text)
		if err == nil {
			t.Fatalf("ParseKeyring(%d characters) took a bad keyring", len(text))
		}
		if strings.Contains(err.Error(), "abab") || strings.Contains(err.Error(), "cdcd") {
			t.Fatalf("error shows key material: %v", err)
		}
	}
	ring, err := ParseKeyring("# c\n1:" + strings.Repeat("ab", 32) + ", 2:" + strings.Repeat("cd", 32) + "\r\n")
	if err != nil || ring.Current() != 2 || len(ring.IDs()) != 2 {
		t.Fatalf("comma and CRLF separated keyring: %v, %v", ring, err)
	}
}

// privateFiles writes a keyring, a read-model key and a passphrase file
// (mode 0600) in dir and returns, by path, the loader of each.
func privateFiles(t *testing.T, dir string) map[string]func(string) error {
	t.Helper()
	ringPath := filepath.Join(dir, "event.keys")
	if created, err := CreateKeyring(ringPath); err != nil || !created {
		t.Fatalf("CreateKeyring: %v, %v", created, err)
	}
	keyPath := filepath.Join(dir, "db.key")
	if _, err := NewDBKeyFile(keyPath); err != nil {
		t.Fatal(err)
	}
	passPath := filepath.Join(dir, "db.pass")
	if err := os.WriteFile(passPath, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]func(string) error{
		ringPath: func(p string) error { _, err := LoadKeyring(p); return err },
		keyPath:  func(p string) error { _, err := LoadDBKey(p); return err },
		passPath: func(p string) error { _, err := LoadDBPassphrase(p); return err },
	}
}
