// Package hidden keeps a value where no fmt verb reaches it, for the types
// that hold secret material (mls/ciphersuite's keys and secrets,
// events.Secret).
package hidden

// Value holds a value two pointers away from where it is stored, so that
// no fmt verb reaches it, whatever holds it: fmt prints a pointer it finds
// below the top level as an address, except under a verb a pointer does
// not take (%s, %q), where it prints what the pointer points to with %v
// (its bad-verb path) and, from there, every further pointer as an address
// again. Secret material is kept in a Value; its types' own Format methods
// cover them only where fmt can call them, not in unexported fields.
//
// A Value is never written after [New], so copies may share it.
type Value[T any] struct {
	p **T
	_ [0]func() // not comparable: == would compare the pointers
}

// New returns a Value holding v, in one allocation.
func New[T any](v T) Value[T] {
	box := &struct {
		p *T
		v T
	}{v: v}
	box.p = &box.v
	return Value[T]{p: &box.p}
}

// Get returns the value held, or the zero value for a zero Value.
func (h Value[T]) Get() T {
	if h.p == nil {
		var zero T
		return zero
	}
	return **h.p
}
