package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/keyfile"
)

// TestKeyringFlagsWinOverEnvironment: $EPOCHLOG_ROOT_KEYS is only the
// default; --keys-file or --keys given on the command line is the keyring
// used, even in a shell that exports another one.
func TestKeyringFlagsWinOverEnvironment(t *testing.T) {
	envRing := "1:" + strings.Repeat("11", 32)
	flagRing := "7:" + strings.Repeat("77", 32)
	file := filepath.Join(t.TempDir(), "event.keys")
	if err := os.WriteFile(file, []byte(flagRing+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		k    keyFlags
		want events.KeyID
	}{
		{"--keys", keyFlags{inline: secretFlag{eventlog.NewSecret(flagRing)}}, 7},
		{"--keys-file", keyFlags{file: file}, 7},
		{"environment", keyFlags{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(k string) string {
				if k == envRootKeys {
					return envRing
				}
				return ""
			}}
			ring, err := tc.k.keyring(env)
			if err != nil {
				t.Fatal(err)
			}
			if got := ring.Current(); got != tc.want {
				t.Fatalf("keyring with current key id %d used, want %d", got, tc.want)
			}
		})
	}
}

// TestKeyringGivenTwiceRefused: --keys-file and --keys together are a
// usage error, not a silent choice of one.
func TestKeyringGivenTwiceRefused(t *testing.T) {
	var out, errb bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	k := keyFlags{file: "event.keys", inline: secretFlag{eventlog.NewSecret("1:" + strings.Repeat("11", 32))}}
	var ue usageError
	if _, err := k.keyring(env); !errors.As(err, &ue) {
		t.Fatalf("--keys-file and --keys together: %v, want a usage error", err)
	}
}

// TestEnsureKeyringFileNeverLeavesPartialFile: a write that fails (here:
// the file size limit) leaves no keyring file behind, so the next run
// creates a complete one instead of taking a truncated file for a
// keyring.
func TestEnsureKeyringFileNeverLeavesPartialFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "event.keys")
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	// Writes past 32 bytes fail with EFBIG (Go ignores SIGXFSZ).
	lim := old
	lim.Cur = 32
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("cannot lower the file size limit: %v", err)
	}
	created, err := ensureKeyringFile(path)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil || created {
		t.Fatalf("ensureKeyringFile under a 32-byte file size limit: created %v, err %v", created, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		b, _ := os.ReadFile(path)
		t.Fatalf("a failed write left a keyring file of %d bytes (stat: %v)", len(b), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 0 {
		t.Fatalf("a failed write left %d files behind, e.g. %s", len(entries), entries[0].Name())
	}
	created, err = ensureKeyringFile(path)
	if err != nil || !created {
		t.Fatalf("ensureKeyringFile after the failure: created %v, err %v", created, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseKeyring(string(b)); err != nil {
		t.Fatalf("keyring file: %v", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file mode %04o", st.Mode().Perm())
	}
	if created, err := ensureKeyringFile(path); err != nil || created {
		t.Fatalf("ensureKeyringFile on an existing keyring: created %v, err %v", created, err)
	}
	if b2, _ := os.ReadFile(path); !bytes.Equal(b, b2) {
		t.Fatal("an existing keyring was replaced")
	}
}

// TestKeyringFileOfAnotherUserRefused: --keys-file owned by another user
// (who could rewrite it and so choose the keys root seals with) is
// refused, naming the file and its owner, where a loose mode only warns.
func TestKeyringFileOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user takes root (chown)")
	}
	file := filepath.Join(t.TempDir(), "event.keys")
	if err := os.WriteFile(file, []byte("7:"+strings.Repeat("77", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(file, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	k := keyFlags{file: file}
	_, err := k.keyring(env)
	if !errors.Is(err, keyfile.ErrNotOwned) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("--keys-file owned by uid 65534: %v, want an error naming the file and its owner", err)
	}
}
