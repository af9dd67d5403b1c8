package events

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// fieldList renders the msgpack fields of t for the docs table, marking
// Secret fields and expanding nested structs.
func fieldList(t reflect.Type) string {
	var parts []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue // never encoded
		}
		name := f.Tag.Get("msgpack")
		s := "`" + name + "`"
		switch {
		case f.Type == secretType:
			s += " **(secret)**"
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			s += " [" + fieldList(f.Type.Elem()) + "]"
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			s += " {" + fieldList(f.Type.Elem()) + "}"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// catalogueRows is the catalogue table of docs/events.md as the code sees it.
func catalogueRows() []string {
	var rows []string
	for _, s := range catalogue {
		rows = append(rows, fmt.Sprintf("| `%s` | %d | %s | %s | %s |",
			s.info.Kind, s.info.Version, s.info.Aggregate, fieldList(s.typ), s.info.Doc))
	}
	return rows
}

// The catalogue table in docs/events.md must match the code: every kind,
// version, aggregate, field and secret marking.
func TestDocsCatalogueTableMatchesCode(t *testing.T) {
	doc, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, row := range catalogueRows() {
		if !strings.Contains(string(doc), row+"\n") {
			missing = append(missing, row)
		}
	}
	if len(missing) > 0 {
		t.Errorf("docs/events.md lacks or differs on these catalogue rows (expected text below):\n%s", strings.Join(missing, "\n"))
	}
}
