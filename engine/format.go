package engine

import (
	"fmt"
	"io"
)

// String describes the Installation by its id and read model, never its
// secrets: its signature key, its groups' states (whose serialized form it
// caches as bytes) and its external PSKs are unexported fields, which fmt
// would print without their own redaction.
func (in *Installation) String() string {
	return fmt.Sprintf("engine.Installation(%s, read model %s)", in.id, in.db.Path())
}

// GoString is String.
func (in *Installation) GoString() string { return in.String() }

// Format prints String under every verb.
func (in *Installation) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, in.String()) }
