package projections

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/internal/redacttest"
)

// An open DB holds its key, as hex, in the SQLite driver's connection
// string, behind the *sql.DB fields fmt reaches from an unexported field
// under %s and %q: however a DB is printed, the key does not show.
func TestDBPrintsNoKey(t *testing.T) {
	k := newKey(t)
	path := filepath.Join(t.TempDir(), "redact.db")
	db := mustOpen(t, path, k, nil)
	redacttest.Check(t, db, map[string][]byte{"read-model key": k.bytes()})
	redacttest.Check(t, k, map[string][]byte{"read-model key": k.bytes()})
	if s := fmt.Sprint(db); !strings.Contains(s, path) {
		t.Errorf("printed DB %q does not name its file %s", s, path)
	}
}
