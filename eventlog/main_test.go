package eventlog

import (
	"fmt"
	"os"
	"testing"

	"github.com/epochlog/epochlog/internal/natstest"
)

// TestMain removes the nats-server binary the fault tests built, and
// turns the test binary into the erase kill test's child when asked.
func TestMain(m *testing.M) {
	if inst := os.Getenv(envEraseChild); inst != "" {
		if err := runEraseChild(inst); err != nil {
			fmt.Fprintln(os.Stderr, "erase child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	natstest.RemoveBuiltServer()
	os.Exit(code)
}
