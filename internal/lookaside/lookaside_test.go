//go:build cgo

package lookaside

import (
	"database/sql"
	"strings"
	"testing"

	_ "github.com/mutecomm/go-sqlcipher/v4"
)

// SQLite takes the setting only before it starts: this fails if anything
// linked into the process initialises SQLite before this package's init
// (an import that opens a database in its own init, say).
func TestConfiguredBeforeSQLiteStarts(t *testing.T) {
	if ok, why := Configured(); !ok {
		t.Fatalf("lookaside not configured: %s", why)
	}
	// Once SQLite runs (opening a database initialises it), the setting
	// can no longer be made: what configure's check relies on.
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	if got := configure(""); got == "" {
		t.Fatal("sqlite3_config accepted a lookaside setting after SQLite was initialised")
	}
}

func TestParseSlots(t *testing.T) {
	for v, want := range map[string]int{"": DefaultSlots, "off": 0, "1": 1, "150": 150, "10000": MaxSlots} {
		if got, err := ParseSlots(v); err != nil || got != want {
			t.Errorf("ParseSlots(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"0", "-5", "10001", "200 ", "lots", "on"} {
		if _, err := ParseSlots(v); err == nil || !strings.Contains(err.Error(), EnvSlots) {
			t.Errorf("ParseSlots(%q): %v, want an error naming %s", v, err, EnvSlots)
		}
	}
}
