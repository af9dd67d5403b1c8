//go:build unix

package keyfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A key file that is a pipe: read when something writes it (a shell's
// <(...)), given up, naming it, when nothing does, instead of waiting for
// good (a command stuck there ignored Ctrl-C).
func TestKeyFileThatIsAPipe(t *testing.T) {
	old := SecretReadTimeout
	SecretReadTimeout = 300 * time.Millisecond
	t.Cleanup(func() { SecretReadTimeout = old })
	fifo := filepath.Join(t.TempDir(), "key.pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDBKey(fifo)
	if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "gave nothing within") {
		t.Fatalf("a pipe nobody writes: %v, want an error naming it", err)
	}

	// Another pipe: the reader given up on the first still waits there.
	SecretReadTimeout = time.Minute
	fifo = filepath.Join(t.TempDir(), "key2.pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.WriteString(strings.Repeat("07", 32) + "\n")
		f.Close()
	}()
	if _, err := LoadDBKey(fifo); err != nil {
		t.Fatalf("a pipe with a writer: %v", err)
	}
}
