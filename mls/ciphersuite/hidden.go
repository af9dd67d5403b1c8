package ciphersuite

// hidden holds a value two pointers away from where it is stored, so that
// no fmt verb reaches it, whatever holds it: fmt prints a pointer it finds
// below the top level as an address, except under a verb a pointer does
// not take (%s, %q), where it prints what the pointer points to with %v
// (its bad-verb path) and, from there, every further pointer as an address
// again. Secret material is kept in a hidden; its types' own Format methods
// cover them only where fmt can call them, not in unexported fields.
type hidden[T any] struct {
	p **T
	_ [0]func() // not comparable: == would compare the pointers
}

// hide returns a hidden holding v.
func hide[T any](v T) hidden[T] {
	box := &struct {
		p *T
		v T
	}{v: v}
	box.p = &box.v
	return hidden[T]{p: &box.p}
}

// get returns the value held, or the zero value for a zero hidden.
func (h hidden[T]) get() T {
	if h.p == nil {
		var zero T
		return zero
	}
	return **h.p
}
