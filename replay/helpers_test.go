package replay

import (
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
)

const (
	instA events.InstallationID = "inst-alice"
	instB events.InstallationID = "inst-bob"
)

var baseTime = time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)

var (
	keyring       = logtest.Keyring
	testConfig    = logtest.Config
	clusterConfig = logtest.ClusterConfig
	openLog       = logtest.Open
	newLog        = logtest.New
	rawDBKey      = logtest.RawDBKey
	lastSeq       = logtest.LastSeq
)
