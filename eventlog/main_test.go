package eventlog

import (
	"os"
	"testing"

	"github.com/epochlog/epochlog/internal/natstest"
)

// TestMain removes the nats-server binary the fault tests built. (A kill
// test's child never gets here: init turns it into the child first;
// kill_helpers_test.go.)
func TestMain(m *testing.M) {
	code := m.Run()
	natstest.RemoveBuiltServer()
	os.Exit(code)
}
