// Package syncbuf holds a bytes.Buffer that several goroutines may write
// while a test reads it: a logger's output, a command's. It imports
// nothing of this module, so every package's tests may use it (logtest
// imports eventlog, whose own tests cannot import it).
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a logger (or a command's output) may
// write from several goroutines while a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
