package eventlog

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// envPlotMaxInFlight caps BenchmarkAppendInFlight's largest in-flight
// bound (default 1024), so that `make plots` can be made shorter.
const envPlotMaxInFlight = "EPOCHLOG_PLOT_MAX_INFLIGHT"

// inFlightSweep are the in-flight bounds of BenchmarkAppendInFlight.
var inFlightSweep = []int{1, 4, 16, 64, 256, 1024}

// BenchmarkAppendInFlight is BenchmarkAppend's raw, rawheaders and sealed
// (256 B bodies, a fresh in-process server each, each aggregate's first
// event appended before the timing) at several bounds on the
// publishes left unacknowledged (Config.MaxInFlight for sealed appends,
// the async publish limit for raw ones): docs/plots/append-inflight.svg
// plots sealed / raw and rawheaders / raw against the bound. Each reports
// ops/s. Bounds above $EPOCHLOG_PLOT_MAX_INFLIGHT are skipped.
func BenchmarkAppendInFlight(b *testing.B) {
	limit := inFlightSweep[len(inFlightSweep)-1]
	if s := os.Getenv(envPlotMaxInFlight); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("$%s=%q: want a positive number", envPlotMaxInFlight, s)
		}
		limit = v
	}
	prev := benchInFlight
	b.Cleanup(func() { benchInFlight = prev })
	const size = 256
	for _, n := range inFlightSweep {
		if n > limit {
			break
		}
		// The sub-benchmarks run one after the other, before b.Run
		// returns, so each sees this bound.
		benchInFlight = n
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			b.Run("raw", func(b *testing.B) { benchRaw(b, size, benchMode{warm: true}) })
			b.Run("rawheaders", func(b *testing.B) { benchRaw(b, size, benchMode{headers: true, warm: true}) })
			b.Run("sealed", func(b *testing.B) { benchSealed(b, size, benchMode{warm: true}) })
		})
	}
}
