package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/epochlog/epochlog/projections"
)

// versionInfo is what `replayer version` prints.
type versionInfo struct {
	Module     string `json:"module"`
	Version    string `json:"version"`
	Commit     string `json:"commit,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	Go         string `json:"go"`
	SQLCipher  string `json:"sqlcipher"`
	SQLite     string `json:"sqlite"`
	PageCipher string `json:"page_cipher"`
	Lookaside  string `json:"sqlite_lookaside"`
	NATSServer string `json:"nats_server"`
}

func runVersion(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "version", "[--json]",
		"Prints the replayer's version (module version, commit), the Go toolchain it was\n"+
			"built with, the SQLCipher, SQLite and embedded nats-server versions linked in,\n"+
			"what encrypts the read models' pages (the CPU's AES instructions, or not and why)\n"+
			"and the lookaside memory each SQLite connection gets.")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	v := versionInfo{Module: "github.com/epochlog/epochlog", Version: "(devel)", Go: runtime.Version(), NATSServer: server.VERSION}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module, v.Version = bi.Main.Path, bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	var err error
	if v.SQLCipher, v.SQLite, err = projections.Versions(); err != nil {
		return err
	}
	v.PageCipher = projections.PageCipher()
	v.Lookaside = projections.Lookaside()
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(v)
	}
	commit := v.Commit
	if commit == "" {
		commit = "unknown"
	} else if v.Modified {
		commit += " (modified)"
	}
	fmt.Fprintf(env.stdout, "replayer %s (%s, commit %s)\n%s, SQLCipher %s (SQLite %s), nats-server %s\npage cipher: %s\nsqlite lookaside: %s\n",
		v.Version, v.Module, commit, v.Go, v.SQLCipher, v.SQLite, v.NATSServer, v.PageCipher, v.Lookaside)
	return nil
}
