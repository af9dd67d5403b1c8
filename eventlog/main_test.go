package eventlog

import (
	"os"
	"testing"

	"github.com/epochlog/epochlog/internal/natstest"
)

// TestMain removes the nats-server binary the fault tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	natstest.RemoveBuiltServer()
	os.Exit(code)
}
