package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/epochlog/epochlog/events"
)

func runCatalogue(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "catalogue", "[--json]", "Lists the event kinds this build reads and writes.")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	enc := json.NewEncoder(env.stdout)
	for _, k := range events.Kinds() {
		if *asJSON {
			if err := enc.Encode(map[string]any{"kind": k.Kind, "version": k.Version, "aggregate": k.Aggregate, "doc": k.Doc}); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(env.stdout, "%-30s v%-3d %-13s %s\n", k.Kind, k.Version, k.Aggregate, k.Doc)
	}
	return nil
}
