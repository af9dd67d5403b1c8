package eventlog

import (
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/natstest"
)

// TestFollowAcrossServerKill9 follows an installation while the nats-server
// process is killed with SIGKILL and started again on the same store: the
// follower sees every event exactly once and in order, and retried appends
// do not duplicate.
func TestFollowAcrossServerKill9(t *testing.T) {
	srv := natstest.StartProcess(t)
	cfg := Config{NATSURL: srv.URL(), RequestTimeout: 5 * time.Second, ReconnectWait: 50 * time.Millisecond}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	followAcross(t, l, group(instA, "kill9"), []int{40, 40}, func() {
		srv.Kill()
		srv.Start()
	})
}
