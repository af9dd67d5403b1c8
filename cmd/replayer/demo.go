package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
)

// demoSummary is what demo prints (as a table, or one JSON object).
type demoSummary struct {
	Run           string                 `json:"run"`
	Stream        string                 `json:"stream"`
	Server        string                 `json:"server"`
	AtomicBatches bool                   `json:"atomic_batches"`
	Installations []string               `json:"installations"`
	Appended      int                    `json:"appended"`
	ReadBack      int                    `json:"read_back"`
	ByKind        map[events.Kind]int    `json:"by_kind"`
	FirstSeq      uint64                 `json:"first_seq"`
	LastSeq       uint64                 `json:"last_seq"`
	AppendSeconds float64                `json:"append_seconds"`
	ReadSeconds   float64                `json:"read_seconds"`
	PerInstall    map[string]installStat `json:"per_installation"`
}

type installStat struct {
	Events int `json:"events"`
}

func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "demo", "[flags]",
		"Starts the embedded JetStream server (or uses --nats), appends a sample history of\n"+
			"several installations (identities, key packages, a group, commits, messages and\n"+
			"deliveries) as sealed events, reads every installation back, opening and checking\n"+
			"each event, and prints a summary. MLS payloads are synthetic bytes until the engine\n"+
			"drives mls/. The keyring is created in the data directory on first use.")
	var conn connFlags
	conn.register(fs, ".epochlog/demo")
	var keys keyFlags
	keys.register(fs)
	members := fs.Int("installations", 3, "number of installations in the sample group (2 to 1000)")
	messages := fs.Int("messages", 1000, "number of application messages")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *members < 2 || *members > 1000 {
		return usageError{"--installations must be between 2 and 1000"}
	}
	if *messages < 0 {
		return usageError{"--messages must not be negative"}
	}
	cfg, err := conn.config(env)
	if err != nil {
		return err
	}
	if keys.file == "" && env.getenv(envRootKeys) == "" && keys.inline == "" {
		if conn.data == "" {
			return usageError{"give --keys-file (or --data for a generated one)"}
		}
		keys.file = filepath.Join(conn.data, "event.keys")
		created, err := ensureKeyringFile(keys.file)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(env.stderr, "replayer: created event keyring %s (keep it: the events cannot be read without it)\n", keys.file)
		}
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return err
	}
	log, err := engine.Open(ctx, cfg, ring)
	if err != nil {
		return err
	}
	defer log.Close()

	run := randomHex(4)
	h := newHistory(run, *members)
	start := time.Now()
	appended, err := h.write(ctx, log, *messages)
	if err != nil {
		return err
	}
	sum := demoSummary{
		Run: run, Stream: log.Stream(), Server: log.ClientURL(), AtomicBatches: log.AtomicBatches(),
		Appended: appended, AppendSeconds: time.Since(start).Seconds(),
		ByKind: map[events.Kind]int{}, PerInstall: map[string]installStat{},
	}
	for _, id := range h.installations {
		sum.Installations = append(sum.Installations, string(id))
	}

	start = time.Now()
	err = log.ReadInstallations(ctx, h.installations, 0, func(r engine.Record) error {
		if sum.FirstSeq == 0 {
			sum.FirstSeq = r.Seq
		}
		sum.LastSeq = r.Seq
		sum.ReadBack++
		sum.ByKind[r.Event.Body.Kind()]++
		st := sum.PerInstall[string(r.Event.Aggregate.Installation)]
		st.Events++
		sum.PerInstall[string(r.Event.Aggregate.Installation)] = st
		return nil
	})
	if err != nil {
		return verifyError{err}
	}
	sum.ReadSeconds = time.Since(start).Seconds()
	if sum.ReadBack != sum.Appended {
		return verifyError{fmt.Errorf("appended %d events but read back %d", sum.Appended, sum.ReadBack)}
	}
	for kind, n := range h.byKind {
		if sum.ByKind[kind] != n {
			return verifyError{fmt.Errorf("kind %s: appended %d, read back %d", kind, n, sum.ByKind[kind])}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	printDemoSummary(env, sum)
	return nil
}

func printDemoSummary(env *cliEnv, s demoSummary) {
	w := env.stdout
	fmt.Fprintf(w, "epochlog demo, run %s\n", s.Run)
	fmt.Fprintf(w, "  stream %s on %s (atomic batches: %v)\n", s.Stream, s.Server, s.AtomicBatches)
	fmt.Fprintf(w, "  appended %d sealed events in %.2fs (%.0f events/s)\n", s.Appended, s.AppendSeconds, rate(s.Appended, s.AppendSeconds))
	fmt.Fprintf(w, "  read back, opened and checked %d events (stream seq %d..%d) in %.2fs (%.0f events/s)\n",
		s.ReadBack, s.FirstSeq, s.LastSeq, s.ReadSeconds, rate(s.ReadBack, s.ReadSeconds))
	fmt.Fprintln(w, "  per installation:")
	for _, id := range s.Installations {
		fmt.Fprintf(w, "    %-28s %6d events\n", id, s.PerInstall[id].Events)
	}
	fmt.Fprintln(w, "  per kind:")
	kinds := make([]string, 0, len(s.ByKind))
	for k := range s.ByKind {
		kinds = append(kinds, string(k))
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "    %-30s %6d\n", k, s.ByKind[events.Kind(k)])
	}
	fmt.Fprintln(w, "  every event read back matched what was appended")
}

func rate(n int, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
